"""Text-to-image: a Stable Diffusion pipeline over ONNX graphs (ModelType.TEXT_TO_IMAGE).

Modules: ``pipeline`` (the ImageGenerator and its loaders), ``graph`` (one ONNX graph behind the
runtime's session), ``layout`` (optimum's diffusers folder layout), ``tokenizer`` (CLIP),
``png`` (the encoder of the result) and ``schedulers`` (the numpy noise schedules). The
pipeline's public names are re-exported here.
"""

from imagine_edge.models.text_to_image.pipeline import (
    ClipTokenizer,
    GenerationTimings,
    StableDiffusionOnnx,
    encode_png,
    load_image_generator,
    load_prepared,
    load_text_to_image,
    load_tiny_sd_random,
)

__all__ = [
    "ClipTokenizer",
    "GenerationTimings",
    "StableDiffusionOnnx",
    "encode_png",
    "load_image_generator",
    "load_prepared",
    "load_text_to_image",
    "load_tiny_sd_random",
]
