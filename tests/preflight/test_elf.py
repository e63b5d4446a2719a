"""The ELF reader (`ortbuild.elf_needed`, `elf_machine`): `struct` over the file, compared with pyelftools."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.preflight.ortbuild import ELFError, elf_machine, elf_needed
from tests import stubelf

NEEDED = ["libcublasLt.so.13", "libcublas.so.13", "libcudart.so.13", "libcuda.so.1"]


def _pyelftools(path: Path) -> tuple[list[str], str]:
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as handle:
        elf = ELFFile(handle)
        needed = [
            tag.needed
            for section in elf.iter_sections()
            if isinstance(section, DynamicSection)
            for tag in section.iter_tags()
            if tag.entry.d_tag == "DT_NEEDED"
        ]
        return needed, elf.header.e_machine


def test_needed_entries_as_pyelftools_reads_them(tmp_path: Path) -> None:
    stub = stubelf.make_stub(tmp_path / "libonnxruntime_providers_cuda.so", NEEDED)
    if stub is None:
        pytest.skip("no C compiler")
    needed, machine = elf_needed(stub)
    assert needed[: len(NEEDED)] == NEEDED
    assert needed == _pyelftools(stub)[0]
    assert machine == elf_machine(Path("/bin/sh")) == elf_machine(stub)


@pytest.mark.parametrize("path", ["/bin/sh", "/usr/bin/env"])
def test_system_files_read_alike(path: str) -> None:
    real = Path(path).resolve()
    assert elf_needed(real)[0] == _pyelftools(real)[0]


def test_no_elf(tmp_path: Path) -> None:
    text, short = tmp_path / "text.so", tmp_path / "short.so"
    text.write_text("INPUT(libfoo.so.1)\n")  # a linker script named like a library
    short.write_bytes(Path("/bin/sh").read_bytes()[:40])
    assert elf_machine(text) is None and elf_machine(tmp_path / "absent.so") is None
    for path in (text, short):
        with pytest.raises(ELFError):
            elf_needed(path)
