"""Semantic versions as recipes use them: version order, npm-style requirements, and the version check.

Our own small implementation: the `semver` package only comes with gdk, and the runtime adds no dependency.
"""

from __future__ import annotations

import re

from .recipe_error import RecipeError

_VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def version_key(version: str) -> tuple:
    match = _VERSION_RE.match(version)
    if not match:
        return (0, 0, 0, 0, version)
    pre = version.split("+")[0].partition("-")[2]
    # a pre-release sorts below its release
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)), 0 if pre else 1, pre)


_COMPARATOR_RE = re.compile(r"^(>=|<=|>|<|=|\^|~)?\s*v?(\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?)$")


def parse_requirement(text: str, where: str) -> list:
    """npm-style range limited to comparators (>=1.0.0 <2.0.0), ^, ~ and ||; returns alternatives."""
    alternatives = []
    for alt in text.split("||"):
        comparators = []
        for token in re.findall(r"(?:>=|<=|>|<|=|\^|~)?\s*[^\s<>=^~]+", alt.strip()):
            token = token.replace(" ", "")
            if token in ("*", "x", "X"):
                continue
            xrange = re.fullmatch(r"=?v?(\d+)(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?", token)
            if xrange and any(g is not None and not g.isdigit() for g in xrange.groups()):
                # 1.x, 1.2.* -> >=1.0.0 <2.0.0, >=1.2.0 <1.3.0
                fixed = [int(g) for g in xrange.groups() if g is not None and g.isdigit()]
                fixed = fixed[:[g is not None and not g.isdigit() for g in xrange.groups()].index(True)]
                lower = tuple(fixed + [0] * (3 - len(fixed)))
                upper = list(lower)
                upper[len(fixed) - 1] += 1
                comparators += [(">=", lower), ("<", tuple(upper))]
                continue
            match = _COMPARATOR_RE.match(token)
            if not match:
                raise RecipeError(f"{where}: cannot read version requirement {text!r} (at {token!r})")
            parts = (match.group(2).split("-")[0].split(".") + ["0", "0"])[:3]
            comparators.append((match.group(1) or "=", tuple(int(p) for p in parts)))
        alternatives.append(comparators)
    return alternatives


def satisfies(version: str, requirement: str) -> bool:
    key = version_key(version)[:3]
    for comparators in parse_requirement(requirement, "requirement"):
        ok = True
        for op, ref in comparators:
            if op == "^":
                upper = (ref[0] + 1, 0, 0) if ref[0] else ((0, ref[1] + 1, 0) if ref[1] else (0, 0, ref[2] + 1))
                ok = ref <= key < upper
            elif op == "~":
                ok = ref <= key < (ref[0], ref[1] + 1, 0)
            else:
                ok = {">=": key >= ref, "<=": key <= ref, ">": key > ref, "<": key < ref, "=": key == ref}[op]
            if not ok:
                break
        if ok:
            return True
    return False


def check_version(version: str, where: str) -> None:
    """RecipeError unless version is a semantic version like 1.0.0."""
    if not _VERSION_RE.fullmatch(version):
        raise RecipeError(f"{where}: version {version!r} is not a semantic version like 1.0.0")
