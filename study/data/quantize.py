"""Audio <-> tokens: per-window normalisation, mu-law / linear quantisation and its inverse, input shift.

Pure tensor functions shared by data preparation, training and generation; never reads files.

Two quantizers (bits b, levels L = 2^b, mu = L - 1), chosen by data.quantizer:

official (the state-spaces/s4 audio loader, float32 throughout, so tokens match it bit for bit):
  normalise  minmax: y = -1 + 2 (x - min) / (max - min + 1e-6)   (linear: t = (x - min) / (max - min + 1e-6))
  compand    mu-law: c = sign(y) ln(1 + mu |y + 1e-8|) / ln(1 + mu),  t = (c + 1) / 2;  linear: t as above
  encode     k = trunc(t (L - 0.01) + 0.005)
  decode     y' = k / (L/2) - 1;  mu-law: x' = sign(y') ((1 + mu)^|y'| - 1) / mu;  linear: x' = y'
  A constant window normalises to -1 (token 0), as in the official loader.
torchaudio (this project's earlier rounding; torchaudio's mu_law_encoding / mu_law_decoding):
  normalise  minmax: y = 2 (x - min) / (max - min) - 1; a constant window (span < 1e-8) becomes 0
  compand    mu-law: c = sign(y) ln(1 + mu |y|) / ln(1 + mu);   linear: c = y
  encode     k = floor(mu (c + 1) / 2 + 1/2)           (round to nearest of L levels, 0 <= k <= mu)
  decode     c' = 2 k / mu - 1;  mu-law: x' = sign(c') ((1 + mu)^|c'| - 1) / mu;  linear: x' = c'
normalization=none skips the min-max step (values are clamped to [-1, 1] instead) under both.
Both put silence on the zero token 2^(b-1) and differ by at most one level elsewhere.
"""

import torch
import torchaudio.functional as audio_functional

QUANTIZATIONS = ("mu-law", "linear")
QUANTIZERS = ("official", "torchaudio")
OFFICIAL_EPSILON = 0.01     # the official quantize(): t (L - epsilon) + epsilon / 2
OFFICIAL_SPAN_GUARD = 1e-6  # the official minmax_scale(): ... / (max - min + 1e-6)
OFFICIAL_SIGN_GUARD = 1e-8  # the official mu_law_encode(): |y + 1e-8|
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


def _check_quantizer(quantizer: str) -> None:
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer={quantizer!r} is not one of {QUANTIZERS}; set data.quantizer=official")


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r} is not one of {NORMALIZATIONS}; set data.normalization=minmax")


def normalize_window(audio: torch.Tensor, normalization: str, *, quantizer: str) -> torch.Tensor:
    """Per-window scaling along the last dimension (time) into [-1, 1] (formulas in the module docstring).

    official minmax: -1 + 2 (x - min) / (max - min + 1e-6), a constant window becomes -1;
    torchaudio minmax: 2 (x - min) / (max - min) - 1, a constant window becomes 0;  none: x.
    """
    _check_quantizer(quantizer)
    _check_normalization(normalization)
    if normalization == "none":
        return audio
    audio = audio.float()
    low = audio.amin(dim=-1, keepdim=True)
    span = audio.amax(dim=-1, keepdim=True) - low
    if quantizer == "official":
        return -1 + 2 * (audio - low) / (span + OFFICIAL_SPAN_GUARD)
    flat = span < 1e-8
    scaled = (audio - low).mul_(2 / torch.where(flat, torch.ones_like(span), span)).sub_(1)
    return scaled.masked_fill_(flat, 0.0) if bool(flat.any()) else scaled


def _official_levels(unit: torch.Tensor, bits: int) -> torch.Tensor:
    """The official quantize(): trunc(t (L - 0.01) + 0.005) of t in [0, 1], in float32."""
    levels = 1 << bits
    scaled = unit.to(torch.float32) * (levels - OFFICIAL_EPSILON) + OFFICIAL_EPSILON / 2
    return scaled.to(torch.int64).clamp_(0, levels - 1)


def _official_mu_law_unit(audio: torch.Tensor, bits: int) -> torch.Tensor:
    """t = (c + 1) / 2 with c = sign(y) ln(1 + mu |y + 1e-8|) / ln(1 + mu), float32 as the official code."""
    mu = torch.tensor((1 << bits) - 1)
    companded = torch.sign(audio) * (torch.log1p(mu * torch.abs(audio + OFFICIAL_SIGN_GUARD)) / torch.log1p(mu))
    return (companded + 1) / 2


def encode(audio: torch.Tensor, bits: int, quantization: str, *, quantizer: str) -> torch.Tensor:
    """Tokens (int64, in [0, 2^bits)) of audio in [-1, 1]; values outside are clamped first.

    Round trip error of the torchaudio quantizer (derived in tests/data/test_quantize.py): linear
    |x - x'| <= 1/mu (half a step); mu-law |x - x'| <= ln(1+mu)/mu^2 (1 + mu|x|) (1+mu)^(1/mu). The
    official quantizer truncates instead of rounding, so its error is up to one step instead of half.
    """
    _check_bits(bits)
    _check_quantization(quantization)
    _check_quantizer(quantizer)
    if quantizer == "official":
        audio = audio.to(torch.float32).clamp(-1.0, 1.0)
        unit = _official_mu_law_unit(audio, bits) if quantization == "mu-law" else (audio + 1) / 2
        return _official_levels(unit, bits)
    dtype = torch.float64 if bits > 8 else torch.float32
    audio = audio.to(dtype).clamp(-1.0, 1.0)
    levels = 1 << bits
    if quantization == "mu-law":
        return audio_functional.mu_law_encoding(audio, levels)
    mu = levels - 1
    return torch.floor((audio + 1) / 2 * mu + 0.5).to(torch.int64).clamp(0, mu)


def decode(tokens: torch.Tensor, bits: int, quantization: str, *, quantizer: str) -> torch.Tensor:
    """Float32 audio in [-1, 1] from tokens: the inverse of `encode` up to its rounding error."""
    _check_bits(bits)
    _check_quantization(quantization)
    _check_quantizer(quantizer)
    levels = 1 << bits
    if quantizer == "official":
        level = tokens.to(torch.float32) / (levels / 2) - 1
        if quantization == "linear":
            return level
        mu = levels - 1
        return torch.sign(level) * (torch.pow(1 + mu, torch.abs(level)) - 1) / mu
    tokens = tokens.to(torch.float64)
    if quantization == "mu-law":
        return audio_functional.mu_law_decoding(tokens, levels).to(torch.float32)
    return (tokens / (levels - 1) * 2 - 1).to(torch.float32)


def tokenize(audio: torch.Tensor, bits: int, quantization: str, normalization: str, *,
             quantizer: str) -> torch.Tensor:
    """Exactly how training windows (..., time) become targets: normalise per window, then encode.

    The official linear path scales straight to [0, 1] (t = (x - min) / (max - min + 1e-6)), as the
    official linear_encode does, rather than through [-1, 1], so that its float32 rounding is the same.
    """
    _check_quantizer(quantizer)
    if quantizer == "official" and quantization == "linear" and normalization == "minmax":
        _check_bits(bits)
        audio = audio.float()
        low = audio.amin(dim=-1, keepdim=True)
        span = audio.amax(dim=-1, keepdim=True) - low
        return _official_levels((audio - low) / (span + OFFICIAL_SPAN_GUARD), bits)
    return encode(normalize_window(audio, normalization, quantizer=quantizer), bits, quantization,
                  quantizer=quantizer)


def shift_inputs(targets: torch.Tensor, bits: int) -> torch.Tensor:
    """Model inputs for next-token training: inputs[..., 0] = zero_token, inputs[..., t] = targets[..., t-1]."""
    inputs = torch.empty_like(targets)
    inputs[..., 0] = zero_token(bits)
    inputs[..., 1:] = targets[..., :-1]
    return inputs
