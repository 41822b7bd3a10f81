"""Stand-ins for the few `comfy_api.latest` names the nodes use, for importing them outside ComfyUI.

Inside ComfyUI the real API is used (see `_comfy.py`). These classes only record what a schema
declares (ids, io types, options) and give `execute` results the same `.args` / `.ui` shape, so
unit tests can check schemas and run `execute` without a ComfyUI tree. They are our own minimal
code, not a copy of ComfyUI's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class UploadType(str, Enum):
    """Upload widgets a combo may carry (the value is the widget option ComfyUI sends)."""

    image = "image_upload"


class _Input:
    """A declared input: its id, io type, default, combo options and other widget settings."""

    io_type = "*"

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, default: Any = None, options: list[Any] | None = None,
                 **extra: Any) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.default = default
        self.options = options
        self.extra = extra


class _Output:
    """A declared output: its id and io type."""

    io_type = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None,
                 tooltip: str | None = None, is_output_list: bool = False) -> None:
        self.id = id
        self.display_name = display_name or id
        self.tooltip = tooltip
        self.is_output_list = is_output_list


def Custom(io_type: str) -> type:
    """A type with `.Input` / `.Output` classes bound to `io_type`."""
    inp = type("Input", (_Input,), {"io_type": io_type})
    out = type("Output", (_Output,), {"io_type": io_type})
    return type(io_type, (), {"io_type": io_type, "Input": inp, "Output": out})


Image = Custom("IMAGE")
Int = Custom("INT")
Float = Custom("FLOAT")
String = Custom("STRING")
Boolean = Custom("BOOLEAN")
Combo = Custom("COMBO")


@dataclass
class Schema:
    """What a node declares: id, display name, menu category, inputs and outputs."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    hidden: list[Any] = field(default_factory=list)
    description: str = ""
    is_output_node: bool = False
    not_idempotent: bool = False


class NodeOutput:
    """The values a node returns, in output order, plus optional UI data."""

    def __init__(self, *args: Any, ui: Any = None) -> None:
        self.args = args
        self.ui = ui

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args or None

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class ComfyNode:
    """Base of V3 nodes: classmethods only, no instance state."""

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError


class ComfyExtension(ABC):
    """A node pack: lists its node classes."""

    async def on_load(self) -> None:
        """Nothing to set up outside ComfyUI."""

    @abstractmethod
    async def get_node_list(self) -> list[type[ComfyNode]]:
        """The pack's node classes."""

