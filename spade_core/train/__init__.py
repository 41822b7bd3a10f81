"""spade_core.train"""
