"""Audio <-> tokens: per-window normalisation, mu-law / linear quantisation and its inverse, input shift.

Pure tensor functions shared by data preparation, training and generation; never reads files.

Conventions (bits b, levels L = 2^b, mu = L - 1, audio in [-1, 1]):
  companding  mu-law: c = sign(x) ln(1 + mu |x|) / ln(1 + mu);   linear: c = x
  encode      k = floor(mu (c + 1) / 2 + 1/2)           (round to nearest of L levels, 0 <= k <= mu)
  decode      c' = 2 k / mu - 1;  mu-law: x' = sign(c') ((1 + mu)^|c'| - 1) / mu;  linear: x' = c'
  zero token  2^(b-1): the level silence encodes to (decode(zero) = 1/mu in the companded domain).
This is torchaudio's mu_law_encoding / mu_law_decoding (used here), with the linear case sharing
the same rounding. The official S4 loader floors (k = floor(L c01)) and decodes to the bin's lower
edge instead; both put silence on 2^(b-1) and differ by at most one level elsewhere.
"""

import torch
import torchaudio.functional as audio_functional

QUANTIZATIONS = ("mu-law", "linear")
NORMALIZATIONS = ("minmax", "none")
MIN_BITS, MAX_BITS = 2, 16


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits={bits!r} is not an integer in [{MIN_BITS}, {MAX_BITS}]; set data.bits=8 (official)")


def _check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r} is not one of {QUANTIZATIONS}; set data.quantization=mu-law")


def zero_token(bits: int) -> int:
    """The token silence encodes to, 2^(bits-1); also the first model input of every window."""
    _check_bits(bits)
    return 1 << (bits - 1)


def token_dtype(bits: int) -> torch.dtype:
    """Smallest unsigned storage type for tokens in [0, 2^bits): uint8 up to 8 bits, else uint16."""
    _check_bits(bits)
    return torch.uint8 if bits <= 8 else torch.uint16


def normalize_window(audio: torch.Tensor, normalization: str) -> torch.Tensor:
    """Per-window scaling along the last dimension (time).

    minmax: x' = 2 (x - min) / (max - min) - 1, so each window spans exactly [-1, 1] (the official
            loader's min-max scaling, without its 1e-6 in the denominator); a constant window
            (max - min < 1e-8) becomes silence, 0, instead of -1.
    none:   x' = x (encode clamps to [-1, 1]).
    """
    if normalization == "none":
        return audio
    if normalization != "minmax":
        raise ValueError(f"normalization={normalization!r} is not one of {NORMALIZATIONS}; set data.normalization=minmax")
    audio = audio.float()
    low = audio.amin(dim=-1, keepdim=True)
    high = audio.amax(dim=-1, keepdim=True)
    span = high - low
    flat = span < 1e-8
    scaled = 2 * (audio - low) / torch.where(flat, torch.ones_like(span), span) - 1
    return torch.where(flat, torch.zeros_like(scaled), scaled)


def encode(audio: torch.Tensor, bits: int, quantization: str) -> torch.Tensor:
    """Tokens (int64, in [0, 2^bits)) of audio in [-1, 1]; values outside are clamped first.

    Round trip error (derived in tests/data/test_quantize.py): linear |x - x'| <= 1/mu (half a step);
    mu-law |x - x'| <= ln(1+mu)/mu^2 (1 + mu|x|) (1+mu)^(1/mu)  (half a companded step times the
    largest slope of the expansion on that step).
    """
    _check_bits(bits)
    _check_quantization(quantization)
    dtype = torch.float64 if bits > 8 else torch.float32
    audio = audio.to(dtype).clamp(-1.0, 1.0)
    levels = 1 << bits
    if quantization == "mu-law":
        return audio_functional.mu_law_encoding(audio, levels)
    mu = levels - 1
    return torch.floor((audio + 1) / 2 * mu + 0.5).to(torch.int64).clamp(0, mu)


def decode(tokens: torch.Tensor, bits: int, quantization: str) -> torch.Tensor:
    """Float32 audio in [-1, 1] from tokens: the inverse of `encode` up to its rounding error."""
    _check_bits(bits)
    _check_quantization(quantization)
    levels = 1 << bits
    tokens = tokens.to(torch.float64)
    if quantization == "mu-law":
        return audio_functional.mu_law_decoding(tokens, levels).to(torch.float32)
    return (tokens / (levels - 1) * 2 - 1).to(torch.float32)


def tokenize(audio: torch.Tensor, bits: int, quantization: str, normalization: str) -> torch.Tensor:
    """encode(normalize_window(audio)): exactly how training windows (..., time) become targets."""
    return encode(normalize_window(audio, normalization), bits, quantization)


def shift_inputs(targets: torch.Tensor, bits: int) -> torch.Tensor:
    """Model inputs for next-token training: inputs[..., 0] = zero_token, inputs[..., t] = targets[..., t-1]."""
    inputs = torch.empty_like(targets)
    inputs[..., 0] = zero_token(bits)
    inputs[..., 1:] = targets[..., :-1]
    return inputs
