"""The embedded demo dataset: procedural foot photos with planted problems and ground truth."""

from curate.demo.generate import DemoSummary, generate_demo

__all__ = ["DemoSummary", "generate_demo"]
