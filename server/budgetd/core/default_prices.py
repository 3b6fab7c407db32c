"""The price table budgetd ships with: one row per model, with its source and date.

Each row is the vendor's (or host's) public list price in USD per one million tokens:
uncached input, output, cached input (prompt-cache reads), cache-write input (prompt-cache
creation), reasoning output; then the pricing page it comes from and the month the price
is known as of. The rules for the columns a vendor does not list:

- cached input: the input price when the vendor gives no cache discount (Mistral, Llama
  hosts, the `-pro` reasoning models);
- cache write: Anthropic bills a 5-minute cache write at 1.25 x input; OpenAI, Google,
  xAI, DeepSeek, Mistral and the Llama hosts bill it as ordinary input (Google's cache
  storage, per hour, is not a token price and is not modelled);
- reasoning: billed as output tokens by every vendor here.

Long-context tiers (Gemini 2.5 Pro and Claude Sonnet 4 / 4.5 above 200k input tokens,
Grok 4 above 128k) are priced at the base tier. Names are normalised entry names (see
`budgetd.core.prices`): they match themselves and the same name plus a version suffix.
Where two hosts spell a model the same way, the row says which host's price it holds.
A price file (see the README) replaces or extends this table; a request's own cost wins.
"""

from __future__ import annotations

from budgetd.core.prices import Price, PriceTable, parse_price

AS_OF = "2025-11"
OPENAI = "openai.com/api/pricing"
ANTHROPIC = "anthropic.com/pricing"
GOOGLE = "ai.google.dev/gemini-api/docs/pricing"
XAI = "docs.x.ai/docs/models"
MISTRAL = "mistral.ai/pricing"
DEEPSEEK = "api-docs.deepseek.com/quick_start/pricing"
GROQ = "groq.com/pricing"
TOGETHER = "together.ai/pricing"
FIREWORKS = "fireworks.ai/pricing"
BEDROCK = "aws.amazon.com/bedrock/pricing"

# fmt: off
# (model, input, output, cached input, cache write, reasoning, source, as of), USD / 1M.
DEFAULT_PRICE_ROWS: tuple[tuple[str, str, str, str, str, str, str, str], ...] = (
    # --- OpenAI: no cache-write surcharge; reasoning tokens are output tokens.
    ("gpt-5", "1.25", "10.00", "0.125", "1.25", "10.00", OPENAI, AS_OF),
    ("gpt-5-mini", "0.25", "2.00", "0.025", "0.25", "2.00", OPENAI, AS_OF),
    ("gpt-5-nano", "0.05", "0.40", "0.005", "0.05", "0.40", OPENAI, AS_OF),
    ("gpt-5-pro", "15.00", "120.00", "15.00", "15.00", "120.00", OPENAI, AS_OF),
    ("gpt-5-chat", "1.25", "10.00", "0.125", "1.25", "10.00", OPENAI, AS_OF),
    ("gpt-5-codex", "1.25", "10.00", "0.125", "1.25", "10.00", OPENAI, AS_OF),
    ("gpt-5.1", "1.25", "10.00", "0.125", "1.25", "10.00", OPENAI, AS_OF),
    ("gpt-5.1-chat", "1.25", "10.00", "0.125", "1.25", "10.00", OPENAI, AS_OF),
    ("gpt-5.1-codex", "1.25", "10.00", "0.125", "1.25", "10.00", OPENAI, AS_OF),
    ("gpt-5.1-codex-mini", "0.25", "2.00", "0.025", "0.25", "2.00", OPENAI, AS_OF),
    ("gpt-4.1", "2.00", "8.00", "0.50", "2.00", "8.00", OPENAI, AS_OF),
    ("gpt-4.1-mini", "0.40", "1.60", "0.10", "0.40", "1.60", OPENAI, AS_OF),
    ("gpt-4.1-nano", "0.10", "0.40", "0.025", "0.10", "0.40", OPENAI, AS_OF),
    ("gpt-4o", "2.50", "10.00", "1.25", "2.50", "10.00", OPENAI, AS_OF),
    # The first gpt-4o snapshot kept its launch price (and has no cache discount).
    ("gpt-4o-2024-05-13", "5.00", "15.00", "5.00", "5.00", "15.00", OPENAI, AS_OF),
    ("gpt-4o-mini", "0.15", "0.60", "0.075", "0.15", "0.60", OPENAI, AS_OF),
    ("chatgpt-4o-latest", "5.00", "15.00", "5.00", "5.00", "15.00", OPENAI, AS_OF),
    ("gpt-4-turbo", "10.00", "30.00", "10.00", "10.00", "30.00", OPENAI, AS_OF),
    ("gpt-4", "30.00", "60.00", "30.00", "30.00", "60.00", OPENAI, AS_OF),
    ("gpt-3.5-turbo", "0.50", "1.50", "0.50", "0.50", "1.50", OPENAI, AS_OF),
    ("o1", "15.00", "60.00", "7.50", "15.00", "60.00", OPENAI, AS_OF),
    ("o1-preview", "15.00", "60.00", "7.50", "15.00", "60.00", OPENAI, AS_OF),
    ("o1-mini", "1.10", "4.40", "0.55", "1.10", "4.40", OPENAI, AS_OF),
    ("o1-pro", "150.00", "600.00", "150.00", "150.00", "600.00", OPENAI, AS_OF),
    ("o3", "2.00", "8.00", "0.50", "2.00", "8.00", OPENAI, AS_OF),
    ("o3-pro", "20.00", "80.00", "20.00", "20.00", "80.00", OPENAI, AS_OF),
    ("o3-mini", "1.10", "4.40", "0.55", "1.10", "4.40", OPENAI, AS_OF),
    ("o3-deep-research", "10.00", "40.00", "2.50", "10.00", "40.00", OPENAI, AS_OF),
    ("o4-mini", "1.10", "4.40", "0.275", "1.10", "4.40", OPENAI, AS_OF),
    ("o4-mini-deep-research", "2.00", "8.00", "0.50", "2.00", "8.00", OPENAI, AS_OF),
    ("codex-mini-latest", "1.50", "6.00", "0.375", "1.50", "6.00", OPENAI, AS_OF),
    # --- Anthropic: cache read 0.1 x input, 5-minute cache write 1.25 x input.
    ("claude-opus-4-5", "5.00", "25.00", "0.50", "6.25", "25.00", ANTHROPIC, AS_OF),
    ("claude-opus-4-1", "15.00", "75.00", "1.50", "18.75", "75.00", ANTHROPIC, AS_OF),
    ("claude-opus-4", "15.00", "75.00", "1.50", "18.75", "75.00", ANTHROPIC, AS_OF),
    ("claude-opus-4-0", "15.00", "75.00", "1.50", "18.75", "75.00", ANTHROPIC, AS_OF),
    ("claude-sonnet-4-5", "3.00", "15.00", "0.30", "3.75", "15.00", ANTHROPIC, AS_OF),
    ("claude-sonnet-4", "3.00", "15.00", "0.30", "3.75", "15.00", ANTHROPIC, AS_OF),
    ("claude-sonnet-4-0", "3.00", "15.00", "0.30", "3.75", "15.00", ANTHROPIC, AS_OF),
    ("claude-haiku-4-5", "1.00", "5.00", "0.10", "1.25", "5.00", ANTHROPIC, AS_OF),
    ("claude-3-7-sonnet", "3.00", "15.00", "0.30", "3.75", "15.00", ANTHROPIC, AS_OF),
    ("claude-3-5-sonnet", "3.00", "15.00", "0.30", "3.75", "15.00", ANTHROPIC, AS_OF),
    ("claude-3-5-haiku", "0.80", "4.00", "0.08", "1.00", "4.00", ANTHROPIC, AS_OF),
    ("claude-3-opus", "15.00", "75.00", "1.50", "18.75", "75.00", ANTHROPIC, AS_OF),
    ("claude-3-sonnet", "3.00", "15.00", "0.30", "3.75", "15.00", ANTHROPIC, AS_OF),
    # Haiku 3's cache prices are listed rounded: $0.30 to write, $0.03 to read.
    ("claude-3-haiku", "0.25", "1.25", "0.03", "0.30", "1.25", ANTHROPIC, AS_OF),
    # --- Google (Gemini API; Vertex AI lists the same): thinking tokens are output.
    ("gemini-3-pro-preview", "2.00", "12.00", "0.20", "2.00", "12.00", GOOGLE, AS_OF),
    ("gemini-2.5-pro", "1.25", "10.00", "0.125", "1.25", "10.00", GOOGLE, AS_OF),
    ("gemini-2.5-flash", "0.30", "2.50", "0.03", "0.30", "2.50", GOOGLE, AS_OF),
    ("gemini-2.5-flash-preview-09-2025", "0.30", "2.50", "0.03", "0.30", "2.50", GOOGLE, AS_OF),
    ("gemini-2.5-flash-lite", "0.10", "0.40", "0.01", "0.10", "0.40", GOOGLE, AS_OF),
    ("gemini-2.5-flash-lite-preview-09-2025",
     "0.10", "0.40", "0.01", "0.10", "0.40", GOOGLE, AS_OF),
    ("gemini-2.0-flash", "0.10", "0.40", "0.025", "0.10", "0.40", GOOGLE, AS_OF),
    ("gemini-2.0-flash-lite", "0.075", "0.30", "0.075", "0.075", "0.30", GOOGLE, AS_OF),
    ("gemini-1.5-pro", "1.25", "5.00", "0.3125", "1.25", "5.00", GOOGLE, AS_OF),
    ("gemini-1.5-flash", "0.075", "0.30", "0.01875", "0.075", "0.30", GOOGLE, AS_OF),
    ("gemini-1.5-flash-8b", "0.0375", "0.15", "0.01", "0.0375", "0.15", GOOGLE, AS_OF),
    # --- xAI: no cache-write surcharge.
    ("grok-4", "3.00", "15.00", "0.75", "3.00", "15.00", XAI, AS_OF),
    ("grok-4-fast-reasoning", "0.20", "0.50", "0.05", "0.20", "0.50", XAI, AS_OF),
    ("grok-4-fast-non-reasoning", "0.20", "0.50", "0.05", "0.20", "0.50", XAI, AS_OF),
    ("grok-code-fast-1", "0.20", "1.50", "0.02", "0.20", "1.50", XAI, AS_OF),
    ("grok-3", "3.00", "15.00", "0.75", "3.00", "15.00", XAI, AS_OF),
    ("grok-3-mini", "0.30", "0.50", "0.075", "0.30", "0.50", XAI, AS_OF),
    ("grok-2", "2.00", "10.00", "2.00", "2.00", "10.00", XAI, AS_OF),
    ("grok-2-vision", "2.00", "10.00", "2.00", "2.00", "10.00", XAI, AS_OF),
    # --- Mistral: no prompt-cache discount.
    ("mistral-large", "2.00", "6.00", "2.00", "2.00", "6.00", MISTRAL, AS_OF),
    ("mistral-medium", "0.40", "2.00", "0.40", "0.40", "2.00", MISTRAL, AS_OF),
    ("mistral-small", "0.10", "0.30", "0.10", "0.10", "0.30", MISTRAL, AS_OF),
    ("magistral-medium", "2.00", "5.00", "2.00", "2.00", "5.00", MISTRAL, AS_OF),
    ("magistral-small", "0.50", "1.50", "0.50", "0.50", "1.50", MISTRAL, AS_OF),
    ("codestral", "0.30", "0.90", "0.30", "0.30", "0.90", MISTRAL, AS_OF),
    ("devstral-medium", "0.40", "2.00", "0.40", "0.40", "2.00", MISTRAL, AS_OF),
    ("devstral-small", "0.10", "0.30", "0.10", "0.10", "0.30", MISTRAL, AS_OF),
    ("pixtral-large", "2.00", "6.00", "2.00", "2.00", "6.00", MISTRAL, AS_OF),
    ("ministral-8b", "0.10", "0.10", "0.10", "0.10", "0.10", MISTRAL, AS_OF),
    ("ministral-3b", "0.04", "0.04", "0.04", "0.04", "0.04", MISTRAL, AS_OF),
    ("open-mistral-nemo", "0.15", "0.15", "0.15", "0.15", "0.15", MISTRAL, AS_OF),
    # --- DeepSeek (V3.2-Exp prices since 2025-09-29): a cache miss is plain input.
    ("deepseek-chat", "0.28", "0.42", "0.028", "0.28", "0.42", DEEPSEEK, AS_OF),
    ("deepseek-reasoner", "0.28", "0.42", "0.028", "0.28", "0.42", DEEPSEEK, AS_OF),
    # --- Llama by Meta's names (meta-llama/Llama-3.3-70B-Instruct, as Hugging Face and
    # OpenRouter spell them, and the short names), at Together's serverless price.
    ("llama-3.3-70b-instruct", "0.88", "0.88", "0.88", "0.88", "0.88", TOGETHER, AS_OF),
    ("llama-3.1-405b-instruct", "3.50", "3.50", "3.50", "3.50", "3.50", TOGETHER, AS_OF),
    ("llama-3.1-70b-instruct", "0.88", "0.88", "0.88", "0.88", "0.88", TOGETHER, AS_OF),
    ("llama-3.1-8b-instruct", "0.18", "0.18", "0.18", "0.18", "0.18", TOGETHER, AS_OF),
    ("llama-3.3-70b", "0.88", "0.88", "0.88", "0.88", "0.88", TOGETHER, AS_OF),
    ("llama-3.1-405b", "3.50", "3.50", "3.50", "3.50", "3.50", TOGETHER, AS_OF),
    ("llama-3.1-70b", "0.88", "0.88", "0.88", "0.88", "0.88", TOGETHER, AS_OF),
    ("llama-3.1-8b", "0.18", "0.18", "0.18", "0.18", "0.18", TOGETHER, AS_OF),
    ("llama-4-maverick", "0.27", "0.85", "0.27", "0.27", "0.85", TOGETHER, AS_OF),
    ("llama-4-scout", "0.18", "0.59", "0.18", "0.18", "0.59", TOGETHER, AS_OF),
    # --- Llama on Together (meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo, ...). Groq
    # spells Scout the same way and lists it lower (0.11 / 0.34): the higher price is kept.
    ("llama-3.3-70b-instruct-turbo", "0.88", "0.88", "0.88", "0.88", "0.88", TOGETHER, AS_OF),
    ("meta-llama-3.1-405b-instruct-turbo", "3.50", "3.50", "3.50", "3.50", "3.50", TOGETHER, AS_OF),
    ("meta-llama-3.1-70b-instruct-turbo", "0.88", "0.88", "0.88", "0.88", "0.88", TOGETHER, AS_OF),
    ("meta-llama-3.1-8b-instruct-turbo", "0.18", "0.18", "0.18", "0.18", "0.18", TOGETHER, AS_OF),
    ("llama-4-maverick-17b-128e-instruct-fp8",
     "0.27", "0.85", "0.27", "0.27", "0.85", TOGETHER, AS_OF),
    ("llama-4-scout-17b-16e-instruct", "0.18", "0.59", "0.18", "0.18", "0.59", TOGETHER, AS_OF),
    # --- Llama on Groq (llama-3.3-70b-versatile, meta-llama/llama-4-maverick-...).
    ("llama-3.3-70b-versatile", "0.59", "0.79", "0.59", "0.59", "0.79", GROQ, AS_OF),
    ("llama-3.1-8b-instant", "0.05", "0.08", "0.05", "0.05", "0.08", GROQ, AS_OF),
    ("llama-4-maverick-17b-128e-instruct", "0.20", "0.60", "0.20", "0.20", "0.60", GROQ, AS_OF),
    # --- Llama on Fireworks (accounts/fireworks/models/llama-v3p3-70b-instruct, ...).
    ("llama-v3p3-70b-instruct", "0.90", "0.90", "0.90", "0.90", "0.90", FIREWORKS, AS_OF),
    ("llama-v3p1-405b-instruct", "3.00", "3.00", "3.00", "3.00", "3.00", FIREWORKS, AS_OF),
    ("llama-v3p1-70b-instruct", "0.90", "0.90", "0.90", "0.90", "0.90", FIREWORKS, AS_OF),
    ("llama-v3p1-8b-instruct", "0.20", "0.20", "0.20", "0.20", "0.20", FIREWORKS, AS_OF),
    ("llama4-maverick-instruct-basic", "0.22", "0.88", "0.22", "0.22", "0.88", FIREWORKS, AS_OF),
    ("llama4-scout-instruct-basic", "0.15", "0.60", "0.15", "0.15", "0.60", FIREWORKS, AS_OF),
    # --- Llama on Bedrock (meta.llama3-3-70b-instruct-v1:0, ...), us-east-1 on demand.
    ("llama3-3-70b-instruct", "0.72", "0.72", "0.72", "0.72", "0.72", BEDROCK, AS_OF),
    ("llama3-1-70b-instruct", "0.72", "0.72", "0.72", "0.72", "0.72", BEDROCK, AS_OF),
    ("llama3-1-8b-instruct", "0.22", "0.22", "0.22", "0.22", "0.22", BEDROCK, AS_OF),
)
# fmt: on

_KEYS = ("input", "output", "cached_input", "cache_write_input", "reasoning")


def default_price_table() -> PriceTable:
    prices: dict[str, Price] = {}
    sources: dict[str, str] = {}
    for row in DEFAULT_PRICE_ROWS:
        model = row[0]
        usd = dict(zip(_KEYS, row[1:6], strict=True))
        prices[model] = parse_price(usd, f"default prices.{model}", model)
        sources[model] = f"default: {row[6]}, {row[7]}"
    return PriceTable(prices, sources)
