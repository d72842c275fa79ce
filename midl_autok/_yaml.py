"""Reading YAML that people wrote: the safe loader, with bounds.

``yaml.safe_load`` builds plain data only (a ``!!python/object`` tag is an error, never a
call), but a hand-written or hostile file can still do harm in two ways that it lets through:

* **aliases that expand**: ``b: [*a, *a, ...]`` repeated a few levels is a small file whose
  data is cheap to load (every ``*a`` is a reference to one object) but has billions of
  values for whatever walks it next (validation, JSON, hashing): a hang. A document that
  refers to itself (``&a [*a]``) never ends at all;
* **numbers**: an integer literal longer than Python's int-from-string limit raises a
  ``ValueError`` (not a ``YAMLError``).

:func:`load_yaml` refuses both with one clear line, in the caller's error class. It uses
libyaml's C parser when PyYAML has it (several times faster, and it bounds the nesting
depth), else the pure-Python one.
"""

from __future__ import annotations

from typing import Any

from midl_autok.errors import UserError

__all__ = ["MAX_VALUES", "load_yaml"]

#: Most values (scalars, lists and mappings, with aliases expanded) a document may hold.
MAX_VALUES = 2_000_000


class _TooLarge(Exception):
    pass


class _Recursive(Exception):
    pass


def load_yaml(text: str, *, source: str, error: type[UserError] = UserError) -> Any:
    """Parse ``text`` with the safe loader; raise ``error`` naming ``source`` if it is not
    valid YAML, expands past :data:`MAX_VALUES` values, refers to itself, or nests too deep."""
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{source}: not valid YAML ({reason})") from None
    except _TooLarge:
        raise error(
            f"{source}: the document holds more than {MAX_VALUES:,} values once its aliases "
            "are expanded; write the data out, without aliases that multiply it"
        ) from None
    except _Recursive:
        raise error(
            f"{source}: the document refers to itself (an alias inside its anchor)"
        ) from None
    except RecursionError:
        raise error(f"{source}: the document is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python reads
        raise error(f"{source}: not valid YAML ({exc})") from None
    finally:
        loader.dispose()


def _check_size(root: Any) -> None:
    """Count the values of the node graph with aliases expanded (each node's size once)."""
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in active:
            raise _Recursive
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_VALUES:
            raise _TooLarge
        sizes[key] = total
        return total

    size(root)
