"""Integer-cent arithmetic. No float ever touches money."""


def fee_for(payout_cents: int, fee_bps: int) -> int:
    """Platform fee on top of a payout, rounded half up to the cent."""
    return (payout_cents * fee_bps + 5_000) // 10_000


def prorate(total_cents: int, part: int, whole: int) -> int:
    """total * part / whole, rounded down (the remainder stays with the payer)."""
    if whole <= 0:
        raise ValueError("whole must be positive")
    return total_cents * part // whole
