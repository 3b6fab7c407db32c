"""The price table budgetd ships with: USD per one million tokens, by model-name prefix.

List prices of the providers' public pages for common models; a price file (see the
README) replaces or extends this table, and a request's explicit cost always wins. Keys
are prefixes: `claude-sonnet-4` also prices `claude-sonnet-4-20250514`.
"""

from __future__ import annotations

from budgetd.core.prices import Price, PriceTable, parse_price

# model prefix: (input, output, cached input)
_DEFAULT_USD_PER_MILLION: dict[str, tuple[str, str, str]] = {
    # OpenAI
    "gpt-5": ("1.25", "10.00", "0.125"),
    "gpt-5-mini": ("0.25", "2.00", "0.025"),
    "gpt-5-nano": ("0.05", "0.40", "0.005"),
    "gpt-4.1": ("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": ("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": ("0.10", "0.40", "0.025"),
    "gpt-4o": ("2.50", "10.00", "1.25"),
    "gpt-4o-mini": ("0.15", "0.60", "0.075"),
    "o1": ("15.00", "60.00", "7.50"),
    "o3": ("2.00", "8.00", "0.50"),
    "o3-mini": ("1.10", "4.40", "0.55"),
    "o4-mini": ("1.10", "4.40", "0.275"),
    # Anthropic (cached input = cache reads)
    "claude-opus-4-5": ("5.00", "25.00", "0.50"),
    "claude-opus-4": ("15.00", "75.00", "1.50"),
    "claude-sonnet-4": ("3.00", "15.00", "0.30"),
    "claude-haiku-4-5": ("1.00", "5.00", "0.10"),
    "claude-3-7-sonnet": ("3.00", "15.00", "0.30"),
    "claude-3-5-sonnet": ("3.00", "15.00", "0.30"),
    "claude-3-5-haiku": ("0.80", "4.00", "0.08"),
    "claude-3-haiku": ("0.25", "1.25", "0.03"),
    # Google
    "gemini-2.5-pro": ("1.25", "10.00", "0.125"),
    "gemini-2.5-flash": ("0.30", "2.50", "0.03"),
    "gemini-2.5-flash-lite": ("0.10", "0.40", "0.01"),
    "gemini-2.0-flash": ("0.10", "0.40", "0.025"),
    "gemini-2.0-flash-lite": ("0.075", "0.30", "0.075"),
    # xAI
    "grok-4": ("3.00", "15.00", "0.75"),
    "grok-3": ("3.00", "15.00", "0.75"),
    "grok-3-mini": ("0.30", "0.50", "0.075"),
    # Mistral
    "mistral-large": ("2.00", "6.00", "2.00"),
    "mistral-medium": ("0.40", "2.00", "0.40"),
    "mistral-small": ("0.10", "0.30", "0.10"),
    "codestral": ("0.30", "0.90", "0.30"),
    "open-mistral-nemo": ("0.15", "0.15", "0.15"),
    # Llama, as served by common hosts (typical serverless list prices)
    "llama-4-maverick": ("0.27", "0.85", "0.27"),
    "llama-4-scout": ("0.18", "0.59", "0.18"),
    "llama-3.3-70b": ("0.88", "0.88", "0.88"),
    "llama-3.1-405b": ("3.50", "3.50", "3.50"),
    "llama-3.1-70b": ("0.88", "0.88", "0.88"),
    "llama-3.1-8b": ("0.18", "0.18", "0.18"),
}


def default_price_table() -> PriceTable:
    prices: dict[str, Price] = {}
    for model, (input_usd, output_usd, cached_usd) in _DEFAULT_USD_PER_MILLION.items():
        prices[model] = parse_price(
            {"input": input_usd, "output": output_usd, "cached_input": cached_usd},
            f"default prices.{model}",
        )
    return PriceTable(prices)
