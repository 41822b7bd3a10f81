"""ComfyUI custom nodes for SPADE (see spade_nodes/nodes.py once implemented)."""
