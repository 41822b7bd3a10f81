"""spade_core.models"""
