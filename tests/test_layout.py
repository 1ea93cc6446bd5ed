"""The folder layout is the architecture: each capability is a subpackage, and no module reaches into
another capability's private names."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "kernelspace_jax"
CAPABILITIES = {"kernel_space", "models", "io", "data", "training", "deblurring", "synthesis", "configs", "cli"}


def capability(module: str) -> str:
    """'kernelspace_jax.deblurring.stylegan2.search' -> 'deblurring'; top-level modules are their own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts), path


def test_capabilities_are_subpackages():
    for name in CAPABILITIES:
        assert (PACKAGE / name / "__init__.py").is_file(), name
    flat = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert flat == ["devices", "xla_options"], f"top-level modules should live in a capability folder: {flat}"


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_private_imports_across_capabilities(module, path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kernelspace_jax."):
            if capability(node.module) == capability(module):
                continue
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{module} imports {private} from {node.module}, another capability's internals"
