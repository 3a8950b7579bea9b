"""Build hook: a wheel carries the onnxruntime-web files the annotation page loads.

They come from the npm package at the version pinned in segany/server/web/package-lock.json
(`npm ci` installs it where node_modules lacks that version) and go to segany/server/vendor/ort/
in the wheel, with their licence, so `segany serve` needs no npm and no source tree. Editable
installs leave them out: in a checkout the server reads node_modules.
"""

import json
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

WEB = Path("segany/server/web")
# What the page imports (segany/server/static/decoder.js) and what that module loads.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_LICENSE = WEB / "onnxruntime-web.LICENSE"


def pinned_version() -> str:
    lock = json.loads((WEB / "package-lock.json").read_text(encoding="utf-8"))
    return lock["packages"]["node_modules/onnxruntime-web"]["version"]


def installed_version() -> str:
    package = WEB / "node_modules" / "onnxruntime-web" / "package.json"
    return json.loads(package.read_text(encoding="utf-8"))["version"] if package.is_file() else ""


class BuildWithOrtWeb(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        version = pinned_version()
        if installed_version() != version:
            try:
                subprocess.run(["npm", "ci", "--prefix", str(WEB)], check=True)
            except (OSError, subprocess.CalledProcessError) as err:
                raise SystemExit(f"building segany needs onnxruntime-web {version} for the annotation page: "
                                 f"`npm ci --prefix {WEB}` failed ({err})") from None
            if installed_version() != version:
                raise SystemExit(f"npm installed onnxruntime-web {installed_version()}, package-lock.json pins {version}")
        target = Path(self.build_lib) / "segany" / "server" / "vendor" / "ort"
        target.mkdir(parents=True, exist_ok=True)
        for name in ORT_FILES:
            shutil.copyfile(WEB / "node_modules" / "onnxruntime-web" / "dist" / name, target / name)
        shutil.copyfile(ORT_LICENSE, target / "LICENSE")
        (target / "VERSION").write_text(version + "\n", encoding="utf-8")


setup(cmdclass={"build_py": BuildWithOrtWeb})
