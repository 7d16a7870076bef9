"""Pytest helpers (import only from tests)."""

from __future__ import annotations

import ast
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlp_core.data.sample_data import ENV_VAR, sample_data_dir, sample_data_root
from vlp_core.towers.base import Tower, TowerOutput

__all__ = [
    "BoringTower",
    "PluginConformance",
    "RandomPairs",
    "TowerConformance",
    "local_s3_emulator",
    "require_sample_data",
    "undeclared_imports",
]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(distribution: str) -> set[str]:
    """Normalised names of ``distribution``'s unconditional requirements (installed metadata, not extras)."""
    from importlib.metadata import requires

    names = set()
    for req in requires(distribution) or []:
        if "extra ==" in req.replace("extra==", "extra =="):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match:
            names.add(_normalise(match.group(1)))
    return names


def _is_optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """An import inside ``try: ... except ImportError`` (an optional dependency probed at run time)."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
        child, parent = parent, parents.get(parent)
    return False


def undeclared_imports(distribution: str, package: str, allow: Iterable[str] = ()) -> dict[str, list[str]]:
    """Third-party modules that ``package``'s source imports but ``distribution`` does not declare.

    Every absolute import in the package's ``.py`` files (also lazy ones inside functions) is mapped to the
    distributions that provide it (``importlib.metadata.packages_distributions``) and must match one of the
    distribution's own requirements: a module that only arrives transitively (``lightning`` through
    ``vlp-core``) counts as undeclared. Imports guarded by ``except ImportError`` are optional and skipped.
    Run it in the package's own environment (``uv sync --package``) so that nothing undeclared is installed.

    Args:
        distribution: distribution name, e.g. ``"vlp-ecg"``.
        package: import name, e.g. ``"vlp_ecg"``.
        allow: top-level module names to accept anyway (say why where you pass them).

    Returns:
        ``{module: ["path/to/file.py:line", ...]}``; empty when every import is declared.
    """
    import importlib.util
    from importlib.metadata import packages_distributions

    declared = _declared(distribution) | {_normalise(distribution)}
    providers = packages_distributions()
    spec = importlib.util.find_spec(package)  # located, not imported: scanning must not need its dependencies
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not importable here")
    root = Path(next(iter(spec.submodule_search_locations)))
    skip = set(sys.stdlib_module_names) | {package, "__future__"} | set(allow)
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module.split(".")[0]]
            else:
                continue
            for module in modules:
                if module in skip or _is_optional(node, parents):
                    continue
                # Editable installs (workspace members) are missing from packages_distributions(): fall back to
                # the distribution named like the module (vlp_core <-> vlp-core).
                dists = providers.get(module) or [module]
                if not any(_normalise(d) in declared for d in dists):
                    found.setdefault(module, []).append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def require_sample_data(*parts: str) -> Path:
    """Return a sample-data path or skip the calling test with a clear reason.

    Args:
        *parts: Path components below the sample-data root, e.g. ``("cxr", "nih_00000001_000.png")``.

    Returns:
        The existing path.
    """
    import pytest  # local import: pytest is a test-only dependency

    path = sample_data_dir(*parts)
    if path is not None:
        return path
    root = sample_data_root()
    what = "/".join(parts) or "the sample-data folder"
    if root is None:
        reason = (
            f"sample data not found ({what}): set ${ENV_VAR} or place the shared data folder at ../shared/data "
            "relative to the project root"
        )
    else:
        reason = f"sample data entry {what!r} not found under {root}"
    pytest.skip(reason)


@contextmanager
def local_s3_emulator(bucket: str = "vlp-test") -> Iterator[dict[str, str]]:
    """A local S3 emulator (moto) on 127.0.0.1 with an empty ``bucket``; yields boto3 storage options.

    Nothing leaves the machine: the endpoint is plain http on localhost and the credentials are dummies. Skips the
    calling test when the test-only dependency ``moto[server]`` is not installed.
    """
    import pytest  # local import: pytest is a test-only dependency

    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        pytest.skip(f"the S3 emulator needs the test-only dependency moto[server] ({err})")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        opts = {"endpoint_url": f"http://{host}:{port}", "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing", "region_name": "us-east-1"}  # fmt: skip
        boto3.client("s3", **opts).create_bucket(Bucket=bucket)
        yield opts
    finally:
        server.stop()


class TowerConformance(ABC):
    """Standard tests every tower should pass; subclass in a domain's tests (langchain "standard tests" pattern).

    Subclasses define ``make_tower(self) -> Tower`` and ``make_input(self, batch_size: int) -> Any`` and inherit:
    the common output type and shapes, gradients reaching every trainable parameter, finite outputs, a state-dict
    round trip, determinism under a seed, and batch independence in eval mode.

    Examples:
        >>> class TestMyTower(TowerConformance):
        ...     def make_tower(self):
        ...         return MyTower(embed_dim=16)
        ...     def make_input(self, batch_size):
        ...         return torch.randn(batch_size, 3, 32, 32)
    """

    batch_size = 3

    @abstractmethod
    def make_tower(self) -> torch.nn.Module:
        """Return the tower under test (called after seeding)."""

    @abstractmethod
    def make_input(self, batch_size: int) -> Any:
        """Return a batch of ``batch_size`` inputs for the tower."""

    def _seeded(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return self.make_tower()

    def test_output_type_and_shapes(self) -> None:
        from vlp_core.towers import TowerOutput

        tower = self._seeded().eval()
        out = tower(self.make_input(self.batch_size))
        assert isinstance(out, TowerOutput)
        assert out.embedding.shape == (self.batch_size, tower.output_dim)
        if out.tokens is not None:
            assert out.tokens.shape[0] == self.batch_size and out.tokens.ndim == 3
        assert torch.isfinite(out.embedding).all()

    def test_every_trainable_parameter_gets_a_gradient(self) -> None:
        tower = self._seeded().train()
        out = tower(self.make_input(self.batch_size))
        total = out.embedding.square().sum()
        if out.tokens is not None:
            total = total + out.tokens.square().sum()
        total.backward()
        missing = [n for n, p in tower.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without gradient: {missing[:10]}"

    def test_state_dict_round_trip(self) -> None:
        a = self._seeded().eval()
        torch.manual_seed(1)
        b = self.make_tower().eval()
        b.load_state_dict(a.state_dict())
        x = self.make_input(self.batch_size)
        torch.testing.assert_close(a(x).embedding, b(x).embedding)

    def test_deterministic_under_seed(self) -> None:
        x = self.make_input(self.batch_size)
        torch.testing.assert_close(self._seeded().eval()(x).embedding, self._seeded().eval()(x).embedding)

    def test_samples_are_independent_in_eval(self) -> None:
        tower = self._seeded().eval()
        x = self.make_input(self.batch_size)
        full = tower(x).embedding
        first = tower(x[:1] if not isinstance(x, list) else x[:1]).embedding
        torch.testing.assert_close(first, full[:1], rtol=1e-4, atol=1e-5)


_KINDS = ("tower", "loss", "dataset", "transform", "demo", "model")


class PluginConformance:
    """Standard tests for a domain package's plug-in; subclass in its tests and set ``domain``.

    Checks that ``vlp_<domain>.plugin.register`` only adds namespaced entries to the registries it is given (never
    the global ones), that every entry resolves to a constructor of the right kind (towers are modules, whole
    models are Lightning modules and never registered as towers), that ``__version__`` is read from the installed
    distribution's metadata, and that the ``vlp-<domain>`` command's help lists the Lightning subcommands.
    """

    domain: str = ""

    def _fresh_registry(self):
        from vlp_core.registry import PluginRegistry, Registry

        return PluginRegistry(*(Registry(k) for k in _KINDS))

    def _registered(self):
        import importlib

        fresh = self._fresh_registry()
        importlib.import_module(f"vlp_{self.domain}.plugin").register(fresh)
        return fresh

    def test_register_adds_only_namespaced_entries(self) -> None:
        from vlp_core import registry as global_registry

        before = {k: r.list() for k, r in global_registry.registries().items()}
        fresh = self._registered()
        kinds = (fresh.models, fresh.towers, fresh.losses, fresh.datasets, fresh.transforms)
        names = [n for reg in kinds for n in reg.list()]
        assert names, f"vlp-{self.domain} registered nothing"
        assert all(n.startswith(f"{self.domain}/") for n in names), names
        assert all(d == self.domain for d in fresh.demos.list())
        after = {k: r.list() for k, r in global_registry.registries().items()}
        assert before == after, "register() must fill the registry it is given, not the global one"

    def test_every_entry_resolves_to_a_constructor_of_its_kind(self) -> None:
        import lightning as L

        from vlp_core.training import Pretrainer

        fresh = self._registered()
        for reg in (fresh.models, fresh.towers, fresh.losses, fresh.datasets, fresh.transforms, fresh.demos):
            for name in reg.list():
                entry = reg.get(name)  # a stale lazy target fails here
                assert callable(entry), f"{reg.kind} {name!r} is not callable"
                if not isinstance(entry, type):
                    continue
                if reg.kind in ("tower", "loss"):
                    assert issubclass(entry, nn.Module), f"{reg.kind} {name!r} is not an nn.Module"
                if reg.kind == "tower":
                    assert not issubclass(entry, L.LightningModule), f"{name!r} is a whole model: register it in models"
                if reg.kind == "model":
                    assert issubclass(entry, Pretrainer), f"model {name!r} is not a vlp_core.training.Pretrainer"

    def test_version_is_installed_metadata(self, monkeypatch) -> None:  # noqa: ANN001 - pytest fixture
        import importlib
        import importlib.metadata

        module = importlib.import_module(f"vlp_{self.domain}")
        assert module.__version__ == importlib.metadata.version(f"vlp-{self.domain}")
        # Read from metadata, not a literal that happens to agree today.
        real = importlib.metadata.version
        monkeypatch.setattr(importlib.metadata, "version", lambda d: "9.9.9" if d == f"vlp-{self.domain}" else real(d))
        try:
            assert importlib.reload(module).__version__ == "9.9.9"
        finally:
            monkeypatch.undo()
            importlib.reload(module)

    def test_declares_every_import(self) -> None:
        missing = undeclared_imports(f"vlp-{self.domain}", f"vlp_{self.domain}")
        assert not missing, f"vlp-{self.domain} imports modules its pyproject does not declare: {missing}"

    def test_cli_help_lists_lightning_commands(self, capsys) -> None:  # noqa: ANN001 - pytest fixture
        import importlib

        importlib.import_module(f"vlp_{self.domain}.cli").main(["--help"])
        out = capsys.readouterr().out
        assert f"vlp-{self.domain}" in out and "fit" in out


class BoringTower(Tower):
    """Lightning-style "boring" tower for tests: an MLP from a feature vector.

    Args:
        in_dim: input width.
        embed_dim: output width.
        hidden: hidden width.
        layer_norm: LayerNorm after the first layer.
        dropout: dropout before the last layer (makes a run depend on the RNG state).

    Shapes:
        ``forward(x [B, in_dim])`` → ``embedding [B, embed_dim]``.
    """

    def __init__(
        self, in_dim: int = 8, embed_dim: int = 16, hidden: int = 32, layer_norm: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden)]
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(nn.GELU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, embed_dim))
        self.net = nn.Sequential(*layers)
        self.output_dim = embed_dim

    def forward(self, x: Tensor) -> TowerOutput:
        return TowerOutput(self.net(x))


class RandomPairs(torch.utils.data.Dataset):
    """Paired vectors ``{"x": a_i, "y": b_i}`` with ``b = a W + noise`` for a fixed random ``W`` ``[dim, dim]``.

    Args:
        n: number of pairs.
        dim: vector width.
        noise: standard deviation of the additive noise (0 = exact linear image).
        seed: generator seed.
    """

    def __init__(self, n: int = 32, dim: int = 8, noise: float = 0.1, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(n, dim, generator=g)
        self.b = self.a @ torch.randn(dim, dim, generator=g)
        if noise:
            self.b = self.b + noise * torch.randn(n, dim, generator=g)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.a[i], "y": self.b[i]}
