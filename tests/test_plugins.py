"""Third-party plugins: a prior (or backend, task, metric) registers through a ``pretty_align.*``
entry point, without editing our import lists (STYLE.md). Each test installs a throwaway
distribution (a ``*.dist-info`` with ``entry_points.txt``) in a temporary sys.path folder."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from pretty_align.errors import PluginError
from pretty_align.registry import Registry

CONSTANT_PRIOR = '''
from pretty_align.priors.base import Prior


class ConstantPrior(Prior):
    """The same text as every example's prior."""

    def __init__(self, k=1, *, text="Hallo", **unknown):
        super().__init__(k=k, **unknown)
        self.text = text

    def build(self, items, tokenizer):
        return [self.from_text(tokenizer, it.prompt, self.text, {"strategy": "constant"}) for it in items]

    def signature(self, src, tgt):
        return {**super().signature(src, tgt), "text": self.text}
'''


def install(root: Path, module: str, source: str, entry_points: str) -> None:
    """A distribution ``<module>-0.1`` in ``root``: the module and its entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A sys.path folder for throwaway distributions; their modules are forgotten afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        if name.startswith("plug_"):
            del sys.modules[name]


def test_a_plugin_prior_runs_in_an_experiment_by_its_entry_point_name(site, tmp_path, monkeypatch, shared_data):
    from pretty_align.experiment.config import load_config
    from pretty_align.experiment.runner import Runner
    from pretty_align.priors import PRIORS

    install(site, "plug_constant", CONSTANT_PRIOR, """
        [pretty_align.priors]
        constant = plug_constant:ConstantPrior
        """)
    # the global registry, as it was before plugins loaded; restored after the test
    monkeypatch.setattr(PRIORS, "_items", dict(PRIORS._items))
    monkeypatch.setattr(PRIORS, "_plugins_loaded", False)
    cfg = tmp_path / "plugin.toml"
    cfg.write_text(f"""
name = "plugin"
store = "{tmp_path / 'plugin.sqlite'}"
[base]
model = "fake:echo"
backend = "fake"
[task]
targets = ["deu_Latn"]
flores = "{shared_data / 'flores200'}"
n = 2
[[priors]]
strategy = "constant"
k = 2
params = {{ text = "Guten Tag" }}
""")
    runner = Runner(load_config(cfg))
    runner.run(progress=False)
    rows = runner.store.rows("plugin")
    assert [r["condition"] for r in rows] == ["constant k=2"] * 2
    assert all(r["prior_text"] == "G" and r["provenance"]["strategy"] == "constant" for r in rows)
    assert PRIORS.get("constant").__module__ == "plug_constant" and "constant" in PRIORS.names()


def test_a_plugin_that_fails_to_import_is_named(site):
    install(site, "plug_broken", "import no_such_package_here\n", """
        [pretty_align.metrics]
        broken = plug_broken:Broken
        """)
    registry: Registry = Registry("metric", "pretty_align.metrics")
    with pytest.raises(PluginError, match=r"metric plugin 'broken' \(plug_broken:Broken.*ModuleNotFoundError"):
        registry.get("bleu")


def test_a_plugin_cannot_take_a_registered_name(site):
    install(site, "plug_clash", CONSTANT_PRIOR, """
        [pretty_align.test_clash]
        gold = plug_clash:ConstantPrior
        fresh = plug_clash:ConstantPrior
        """)
    registry: Registry = Registry("prior strategy", "pretty_align.test_clash")

    @registry.register("gold")
    class Gold:
        pass

    with pytest.raises(PluginError, match="the name 'gold' is taken by .*Gold"):
        registry.names()


def test_a_plugin_module_may_register_itself(site):
    install(site, "plug_self", """
        from tests_registry_probe import REGISTRY

        @REGISTRY.register("self-registered")
        class Mine:
            pass
        """, """
        [pretty_align.test_self]
        self-registered = plug_self
        """)
    registry: Registry = Registry("metric", "pretty_align.test_self")
    (site / "tests_registry_probe.py").write_text("REGISTRY = None\n")
    import tests_registry_probe
    tests_registry_probe.REGISTRY = registry
    try:
        assert registry.get("self-registered").__name__ == "Mine"
    finally:
        del sys.modules["tests_registry_probe"]
