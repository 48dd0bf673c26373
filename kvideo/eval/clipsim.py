"""CLIPSIM: CLIP (ViT-B/32) cosine similarity between each frame and the caption, with CLIP's preprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kvideo.eval.preprocess import clip_pixels

CLIP_HINT = (
    "CLIPSIM needs a local CLIP ViT-B/32 folder in the transformers format (config.json, weights, tokenizer "
    "and preprocessor files), e.g. `huggingface-cli download openai/clip-vit-base-patch32 --local-dir clip-vit-b32`"
)


def _embedding(output) -> torch.Tensor:
    """transformers < 5 returns the projected embedding, >= 5 an output whose pooler_output it is."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """Loads CLIP from a local transformers folder and scores (frames, caption) pairs with OpenAI CLIP's own
    preprocessing (kvideo.eval.preprocess.clip_pixels) and an explicit `context_length`-token truncation."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu", frame_batch: int = 64,
                 context_length: int = 77) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no CLIP model in {str(model_dir)!r} (config.json missing). {CLIP_HINT}")
        try:  # transformers takes seconds to import and only CLIPSIM needs it here
            from transformers import CLIPModel, CLIPTokenizer
        except ImportError as error:
            raise ImportError("CLIPSIM needs transformers: pip install transformers") from error
        self.model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).to(device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.device, self.frame_batch, self.context_length = torch.device(device), frame_batch, context_length
        self.image_size = self.model.config.vision_config.image_size
        self.name, self.truncated = model_dir.name, 0

    def token_ids(self, caption: str) -> list[int]:
        """Token ids with start and end tokens; longer than `context_length`, the first context_length - 1
        are kept and the end token closes them (OpenAI's clip.tokenize(truncate=True))."""
        ids = self.tokenizer(caption, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        if len(ids) > self.context_length:
            self.truncated += 1
            ids = ids[:self.context_length - 1] + [self.tokenizer.eos_token_id]
        return ids

    @torch.no_grad()
    def text_embedding(self, caption: str) -> torch.Tensor:
        """Unit-norm text embedding (d,) of the (truncated) caption."""
        ids = torch.tensor([self.token_ids(caption)], device=self.device)
        features = self.model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))
        return torch.nn.functional.normalize(_embedding(features).float(), dim=-1)[0]

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (f, h, w, 3) RGB frames -> unit-norm embeddings (f, d)."""
        chunks = []
        for start in range(0, len(frames), self.frame_batch):
            pixels = clip_pixels(frames[start:start + self.frame_batch], self.image_size).to(self.device)
            chunks.append(_embedding(self.model.get_image_features(pixel_values=pixels)).float())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def score(self, frames: np.ndarray, caption: str) -> float:
        """Mean over frames of cos(image embedding, text embedding)."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"frames must be uint8 (f, h, w, 3) with f >= 1, got shape {frames.shape}")
        if not caption or not caption.strip():
            raise ValueError("CLIPSIM needs a non-empty caption for every video")
        cosine = self.image_embeddings(frames) @ self.text_embedding(caption)  # (f,)
        return float(cosine.mean())
