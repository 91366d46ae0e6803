"""The public names of a package, for the tests that hold them equal to its `__all__`."""

import __future__

from types import ModuleType


def public_names(package: ModuleType) -> set[str]:
    """Names a package binds without a leading underscore, except its own submodules and __future__ flags.

    Only identifiers count: pytest's assertion rewriting binds helpers such as ``@py_builtins`` in
    the modules of a distribution that provides a pytest plugin, and those are no names of ours.
    """
    return {
        name
        for name, value in vars(package).items()
        if name.isidentifier()
        and not name.startswith("_")
        and not isinstance(value, __future__._Feature)
        and not (isinstance(value, ModuleType) and value.__name__.startswith(package.__name__ + "."))
    }


def all_problems(package: ModuleType) -> dict[str, list[str]]:
    """What breaks the rule `public names == __all__`, both ways, and duplicates in `__all__`."""
    listed = list(package.__all__)
    public = public_names(package)
    return {
        "public but not in __all__": sorted(public - set(listed)),
        "in __all__ but not defined": sorted(name for name in listed if not hasattr(package, name)),
        "listed twice in __all__": sorted({name for name in listed if listed.count(name) > 1}),
    }


NO_PROBLEMS: dict[str, list[str]] = {
    "public but not in __all__": [],
    "in __all__ but not defined": [],
    "listed twice in __all__": [],
}
