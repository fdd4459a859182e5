"""An onnxruntime-genai model folder, built at test time by its own builder from SmolLM2's float
weights, added by path and run on our engine: greedy tokens equal onnxruntime-genai's own.

The folder is built once into the user's cache (``test-fixtures/``, keyed by the float weights'
store key) and reused by later runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from imagine_edge.models.adding import add_model
from imagine_edge.models.chat_format import ChatMLFormat
from imagine_edge.models.chat_jinja import JinjaFormat
from imagine_edge.models.formats import detect
from imagine_edge.models.formats.genai_folder import FORMAT, sampling_defaults
from imagine_edge.models.llm import ChatModel
from imagine_edge.models.registry import load_user_model
from imagine_edge.models.store import Manifest
from imagine_edge.python_command import python_module
from imagine_edge.runtime.cache_dir import user_cache
from imagine_edge.runtime.sampling import DEFAULT_MAX_TOKENS, GenerationPlan, SamplingDefaults
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ChatCompletionRequest, ChatMessage

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def genai_folder(smollm2_manifest: Manifest) -> Path:
    """onnxruntime-genai's builder, int4 CPU, on the dequantized SmolLM2 (cached)."""
    assert smollm2_manifest.float_weights is not None
    final = user_cache("test-fixtures") / f"smollm2-genai-int4-{smollm2_manifest.key}"
    if (final / "genai_config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".tmp-") as tmp:
        out = Path(tmp) / "out"
        cmd = [
            *python_module("onnxruntime_genai.models.builder"),
            "-i", str(smollm2_manifest.float_weights), "-o", str(out),
            "-p", "int4", "-e", "cpu", "-c", str(Path(tmp) / "cache"),
        ]  # fmt: skip
        subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
        try:
            out.rename(final)
        except OSError:  # another run built it meanwhile
            if not (final / "genai_config.json").is_file():
                raise
    return final


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def model(genai_folder: Path) -> Iterator[ChatModel]:
    added = add_model(genai_folder, name="smol-genai", progress=False)
    loaded = load_user_model(added.model)
    assert isinstance(loaded, ChatModel)
    yield loaded
    loaded.close()


def test_the_builder_folder_is_detected_as_what_it_is(genai_folder: Path) -> None:
    fmt, found = detect(genai_folder)
    assert fmt is FORMAT
    assert found.description == "llama (30 layers), MatMulNBits int4"
    assert {f.name for f in found.files} >= {"genai_config.json", "model.onnx", "tokenizer.json"}


def test_greedy_tokens_equal_onnxruntime_genai_for_64_tokens(
    model: ChatModel, genai_folder: Path
) -> None:
    og = pytest.importorskip("onnxruntime_genai")
    request = ChatCompletionRequest(
        messages=[ChatMessage(role="user", content="Write an essay about the Roman Empire.")],
        model="smol-genai",
        stream=False,
        max_tokens=64,
    )
    prompt = model.chat_prompt(request)
    chunks = list(model.loop.run(prompt, GenerationPlan.from_params(request, model.defaults)))
    ours = chunks[-1].stats.token_ids
    assert len(ours) == 64  # greedy by default (do_sample false), no temperature given

    reference = og.Model(str(genai_folder))
    params = og.GeneratorParams(reference)
    params.set_search_options(do_sample=False, max_length=len(prompt) + 64)
    generator = og.Generator(reference, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    theirs: list[int] = []
    while not generator.is_done() and len(theirs) < 64:
        generator.generate_next_token()
        theirs.append(int(generator.get_next_tokens()[0]))
    assert ours == theirs


def test_template_tokens_and_defaults_come_from_the_folder(
    model: ChatModel, genai_folder: Path
) -> None:
    config = json.loads((genai_folder / "genai_config.json").read_text(encoding="utf-8"))
    manifest = model.manifest
    assert manifest.chat_template == (genai_folder / "chat_template.jinja").read_text("utf-8")
    assert manifest.special_tokens.eos_token_ids == (config["model"]["eos_token_id"],)
    assert manifest.special_tokens.ids["<|im_end|>"] == 2
    assert manifest.context_length == config["model"]["context_length"]
    assert model.defaults.temperature == 0.0  # do_sample false: greedy
    assert model.defaults.top_k == config["search"]["top_k"]


def test_the_folders_template_in_the_sandbox_renders_as_our_chatml(model: ChatModel) -> None:
    assert model.manifest.chat_template is not None
    jinja = JinjaFormat(model.manifest.chat_template)
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="assistant", content="Hello."),
        ChatMessage(role="user", content="Name a colour."),
    ]
    chatml = ChatMLFormat.from_template(model.manifest.chat_template)
    assert jinja.render(messages) == chatml.render(messages)
    assert jinja.render(messages[1:]) == chatml.render(messages[1:])  # its default system


def test_the_sandbox_refuses_a_template_reaching_python_internals() -> None:
    evil = JinjaFormat("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InvalidRequestError, match="chat template"):
        evil.render([ChatMessage(role="user", content="x")])


def test_search_section_to_sampling_defaults() -> None:
    sampled = sampling_defaults({"do_sample": True, "temperature": 0.6, "top_k": 0, "top_p": 0.9})
    assert sampled == SamplingDefaults(
        temperature=0.6, top_k=-1, top_p=0.9, max_tokens=DEFAULT_MAX_TOKENS
    )
    assert sampling_defaults({}).temperature == 0.0


def test_the_base_records_the_search_section_as_the_manifests_defaults(
    genai_folder: Path, tmp_path: Path
) -> None:
    config = json.loads((genai_folder / "genai_config.json").read_text(encoding="utf-8"))
    out = tmp_path / "base"
    out.mkdir()
    base = FORMAT.prepare_base(genai_folder, out)
    assert base.sampling_defaults == sampling_defaults(config["search"])
    assert base.sampling_defaults is not None
    assert base.sampling_defaults.temperature == 0.0


def _copy(genai_folder: Path, to: Path, skip: str = "") -> Path:
    to.mkdir()
    for f in genai_folder.iterdir():
        if f.name != skip and f.name != "model.onnx.data":
            shutil.copyfile(f, to / f.name)
    return to


def test_a_folder_missing_its_graph_says_so(genai_folder: Path, tmp_path: Path) -> None:
    broken = _copy(genai_folder, tmp_path / "broken", skip="model.onnx")
    with pytest.raises(InvalidRequestError, match=r"has genai_config\.json but no model\.onnx"):
        detect(broken)


def test_a_graph_without_group_query_attention_is_refused(
    genai_folder: Path, tmp_path: Path
) -> None:
    folder = _copy(genai_folder, tmp_path / "plain", skip="model.onnx")
    x = helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["input_ids"], ["logits"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(folder / "model.onnx"))
    with pytest.raises(InvalidRequestError, match="expected a GroupQueryAttention decoder"):
        detect(folder)


def test_a_damaged_config_is_refused(genai_folder: Path, tmp_path: Path) -> None:
    folder = _copy(genai_folder, tmp_path / "bad")
    (folder / "genai_config.json").write_text('{"model": {}}', encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="not an onnxruntime-genai config"):
        detect(folder)


def test_a_second_add_is_a_cache_hit(genai_folder: Path) -> None:
    add_model(genai_folder, name="first", progress=False)
    again = add_model(genai_folder, name="second", progress=False)
    assert again.cache_hit
