"""pyproject lists its packages by hand (package-dir maps envs/ etc. to metarl.*): every source folder that
holds Python or YAML files must be listed, or installs and the wheel a Ray job ships lack it."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_folder_is_a_listed_package():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, package_dir = set(setuptools["packages"]), setuptools["package-dir"]
    expected = set()
    for package, folder in package_dir.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml", ".c") and "__pycache__" not in path.parts:
                relative = path.parent.relative_to(ROOT / folder).parts
                expected.add(".".join((package, *relative)))
    assert expected - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
