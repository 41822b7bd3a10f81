"""spade_core.data"""
