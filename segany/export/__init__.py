"""Exported forms of a model for other runtimes."""

from .onnx import (DECODER_INPUTS, DECODER_OUTPUTS, OnnxDecoder, export_decoder, export_encoder, graph_prompts,
                   prompt_layout)

__all__ = ["DECODER_INPUTS", "DECODER_OUTPUTS", "OnnxDecoder", "export_decoder", "export_encoder", "graph_prompts",
           "prompt_layout"]
