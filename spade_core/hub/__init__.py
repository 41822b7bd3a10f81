"""spade_core.hub"""
