"""Graph IR: immutable SSA nodes, shape rules, verify, printer, JSON serialisation."""
from .builder import Builder
from .graph import (
                    Attrs,
                    AxisAttrs,
                    EinsumAttrs,
                    Graph,
                    MapAttrs,
                    NameAttrs,
                    Node,
                    Op,
                    PadAttrs,
                    PermAttrs,
                    ShapeAttrs,
                    SliceAttrs,
                    Value,
)
from .printer import format_graph, format_node
from .serialize import from_dict, from_json, to_dict, to_json
from .verify import verify

__all__ = [
    "Attrs", "AxisAttrs", "Builder", "EinsumAttrs", "Graph", "MapAttrs", "NameAttrs", "Node", "Op", "PadAttrs",
    "PermAttrs", "ShapeAttrs", "SliceAttrs", "Value", "format_graph", "format_node", "from_dict",
    "from_json", "to_dict", "to_json", "verify",
]
