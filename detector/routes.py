"""Routes: which model serves which assets when one daemon serves several kinds of machine.

A route names a model (a model or registry directory) and the assets it serves: asset-id
globs (`pump-*`, fnmatch syntax, case-sensitive) and/or a file of asset ids or globs, one per
line (`#` starts a comment). An asset is served by the first route that matches it; the
daemon's own `model` setting, when given beside routes, is a last route named "default" that
matches every asset. An asset that matches no route is not guessed at: its records are
dead-lettered with reason `no_model`.

Routes come from the config file only (`[[serve.routes]]` tables), not from flags or the
environment:

    [[serve.routes]]
    name = "pumps"
    model = "/var/lib/vigil/pumps"      # a registry: hot reload
    assets = ["pump-*"]

    [[serve.routes]]
    name = "fans"
    model = "/var/lib/vigil/fans"
    assets_file = "/etc/vigil/fans.txt"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from pathlib import Path

import orjson

DEFAULT_ROUTE = "default"
ROUTE_KEYS = ("name", "model", "assets", "assets_file")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_GLOB_CHARS = frozenset("*?[")
MAX_REMEMBERED = 1_000_000  # assets whose route is remembered (then the memo starts afresh)


class RouteError(ValueError):
    """A bad route; the message names the route and the key."""


@dataclass(frozen=True)
class Route:
    name: str
    model: str                       # model directory, or registry directory (hot reload)
    assets: tuple[str, ...] = ()     # asset-id globs
    assets_file: str = ""            # a file of asset ids or globs, one per line
    matches_all: bool = False        # the default route

    def patterns(self) -> tuple[str, ...]:
        """The globs and ids of `assets` and of the lines of `assets_file`."""
        if not self.assets_file:
            return self.assets
        try:
            lines = Path(self.assets_file).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise RouteError(f"route {self.name!r}: assets_file: cannot read {self.assets_file}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
        listed = [line.split("#", 1)[0].strip() for line in lines]
        return self.assets + tuple(p for p in listed if p)


def parse_routes(tables: object, where: str) -> tuple[Route, ...]:
    """`[[serve.routes]]` tables of a config file -> routes; RouteError naming the table and key."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise RouteError(f"{where}: serve.routes: expected [[serve.routes]] tables")
    routes, names = [], set()
    for i, table in enumerate(tables):
        at = f"{where}: serve.routes[{i}]"
        unknown = sorted(set(table) - set(ROUTE_KEYS))
        if unknown:
            raise RouteError(f"{at}: {unknown[0]}: unknown key (a route has {', '.join(ROUTE_KEYS)})")
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RouteError(f"{at}: name: required, letters, digits, '_', '.', '-' (at most 64), got {name!r}")
        if name in names:
            raise RouteError(f"{at}: name: {name!r} is used twice")
        if name == DEFAULT_ROUTE:
            raise RouteError(f"{at}: name: {DEFAULT_ROUTE!r} is the route of the `model` setting; choose another")
        names.add(name)
        model = table.get("model")
        if not isinstance(model, str) or not model:
            raise RouteError(f"{at} ({name}): model: required, the model or registry directory")
        assets = table.get("assets", [])
        if isinstance(assets, str):
            assets = [assets]
        if not isinstance(assets, list) or not all(isinstance(a, str) and a.strip() for a in assets):
            raise RouteError(f"{at} ({name}): assets: expected a list of asset ids or globs, got {assets!r}")
        assets_file = table.get("assets_file", "")
        if not isinstance(assets_file, str):
            raise RouteError(f"{at} ({name}): assets_file: expected a path, got {assets_file!r}")
        if not assets and not assets_file:
            raise RouteError(f"{at} ({name}): assets or assets_file: required (which assets the route serves)")
        route = Route(name, model, tuple(a.strip() for a in assets), assets_file)
        try:
            route.patterns()  # an unreadable file stops the daemon at start-up, not later
        except RouteError as e:
            raise RouteError(f"{where}: {e}") from None
        routes.append(route)
    return tuple(routes)


def default_route(model: str) -> Route:
    return Route(DEFAULT_ROUTE, model, matches_all=True)


class Router:
    """The index of the route serving each asset (first match wins), or None: remembered per
    asset, so matching costs a dict lookup once an asset has been seen."""

    def __init__(self, routes: tuple[Route, ...] | list[Route]):
        self.routes = tuple(routes)
        self._exact: list[frozenset[str]] = []
        self._globs: list[re.Pattern | None] = []
        for route in self.routes:
            patterns = route.patterns()
            self._exact.append(frozenset(p for p in patterns if not _GLOB_CHARS & set(p)))
            globs = [translate(p) for p in patterns if _GLOB_CHARS & set(p)]
            self._globs.append(re.compile("|".join(f"(?:{g})" for g in globs)) if globs else None)
        self._memo: dict[str, int | None] = {}

    def __call__(self, asset: str) -> int | None:
        try:
            return self._memo[asset]
        except KeyError:
            pass
        found = None
        for i, route in enumerate(self.routes):
            glob = self._globs[i]
            if route.matches_all or asset in self._exact[i] or (glob is not None and glob.match(asset)):
                found = i
                break
        if len(self._memo) >= MAX_REMEMBERED:
            self._memo.clear()
        self._memo[asset] = found
        return found


def asset_of(record) -> str | None:
    """The asset a Kafka record is about: its key, or else its value's "asset" (None: neither is
    usable; decoding the record will say why)."""
    if record.key:
        try:
            return record.key.decode()
        except UnicodeDecodeError:
            return None
    try:
        value = orjson.loads(record.value)
    except (orjson.JSONDecodeError, TypeError):
        return None
    asset = value.get("asset") if isinstance(value, dict) else None
    return asset if isinstance(asset, str) else None


def asset_filter(patterns: tuple[str, ...]) -> Router:
    """A Router of one route serving `patterns` (globs or ids): 0 for an asset they match, else None."""
    return Router([Route("assets", "", patterns)])
