"""spade_core.eval"""
