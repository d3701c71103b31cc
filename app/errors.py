"""One error hierarchy. Services raise these; one handler renders {"error", "detail"}."""

from typing import Any


class AppError(Exception):
    status_code = 400
    code = "bad_request"
    default_detail = "The request could not be processed."
    # Response headers this error always carries, name -> description (the OpenAPI document lists them).
    response_headers: dict[str, str] = {}

    def __init__(self, detail: Any = None, *, headers: dict[str, str] | None = None):
        self.detail = self.default_detail if detail is None else detail
        self.headers = headers or {}
        super().__init__(f"{self.code}: {self.detail}")


# -- generic families ---------------------------------------------------------------------------
class Unauthorized(AppError):
    status_code, code, default_detail = 401, "unauthorized", "Authentication required."
    response_headers = {"WWW-Authenticate": "`Bearer`: send `Authorization: Bearer <access_token>`."}

    def __init__(self, detail: Any = None):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code, code, default_detail = 403, "forbidden", "You may not do this."


class NotFound(AppError):
    status_code, code, default_detail = 404, "not_found", "Not found."


class Conflict(AppError):
    status_code, code, default_detail = 409, "conflict", "The resource is not in a state that allows this."


class Unprocessable(AppError):
    status_code, code, default_detail = 422, "unprocessable", "The request is well-formed but invalid."


class ValidationFailed(Unprocessable):
    """The request does not match the documented schema; `detail` is a list of the problems, each
    with its `loc`ation, `type` and `msg` (FastAPI's shape, without the echoed input)."""

    code, default_detail = "validation_error", "The request does not match the schema."


class RateLimited(AppError):
    status_code, code, default_detail = 429, "rate_limited", "Too many requests."
    response_headers = {"Retry-After": "Seconds to wait before trying again."}

    def __init__(self, retry_after: int, detail: Any = None):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = retry_after


class ServiceUnavailable(AppError):
    """MongoDB or Redis is unreachable or refuses writes: retryable, never a 500."""

    status_code, code, default_detail = 503, "service_unavailable", "A dependency is unavailable."
    response_headers = {"Retry-After": "Seconds to wait before trying again."}

    def __init__(self, detail: Any = None, *, retry_after: int = 2):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class PayloadTooLarge(AppError):
    status_code, code, default_detail = 413, "payload_too_large", "The request body is too large."


class MalformedBody(AppError):
    status_code, code, default_detail = 400, "malformed_body", "The request body could not be read (not UTF-8 JSON)."


class InvalidCursor(Unprocessable):
    code, default_detail = "invalid_cursor", "The cursor is not one this list gave out."


class FieldNotForRole(Unprocessable):
    code, default_detail = "field_not_for_role", "This profile field belongs to another role."


def raises(*classes: type[AppError]):
    """Marks a dependency with the errors it can answer with; the OpenAPI document (app/ops/openapi.py)
    lists them on every route that depends on it."""

    def mark(dependency):
        dependency.raises = classes
        return dependency

    return mark


# -- auth ---------------------------------------------------------------------------------------
class InvalidCredentials(Unauthorized):
    code, default_detail = "invalid_credentials", "Email or password is wrong."


class InvalidToken(Unauthorized):
    code, default_detail = "invalid_token", "The token is missing, expired or invalid."


class RefreshTokenReused(Unauthorized):
    code, default_detail = "refresh_token_reused", "This refresh token was already used; its session was revoked."


class LoginThrottled(RateLimited):
    """Too many failed logins for this account in a row: wait Retry-After seconds, or reset the password."""

    code = "login_throttled"
    default_detail = ("Too many failed logins for this account; retry after the delay, or reset the password to get "
                      "in at once.")

    def __init__(self, retry_after: int):
        super().__init__(retry_after, "Too many failed logins for this account; retry after the delay, or reset "
                                      "the password to get in at once.")


class EmailNotVerified(Forbidden):
    code, default_detail = "email_not_verified", "Verify your email address first."


class AccountDisabled(Forbidden):
    code, default_detail = "account_disabled", "This account is disabled."


class WrongRole(Forbidden):
    code, default_detail = "wrong_role", "Your role may not do this."


class NotOwner(Forbidden):
    code, default_detail = "not_owner", "You do not own this resource."


class EmailTaken(Conflict):
    code, default_detail = "email_taken", "An account with this email already exists."


class WeakPassword(Unprocessable):
    code = "weak_password"


class InvalidOneTimeToken(AppError):
    status_code, code, default_detail = 400, "invalid_one_time_token", "The token is invalid, expired or already used."


# -- money --------------------------------------------------------------------------------------
class InsufficientFunds(Conflict):
    code, default_detail = "insufficient_funds", "Not enough available funds."


class BalanceOwed(Conflict):
    code, default_detail = "balance_owed", "Settle what you owe (a chargeback or a refund made outside the app) first."


class HoldAlreadyResolved(Conflict):
    code, default_detail = "hold_already_resolved", "This escrow hold was already resolved."


class DailyLimitExceeded(Conflict):
    code, default_detail = "daily_limit_exceeded", "This deposit would exceed your daily deposit limit."


class DepositMismatch(Conflict):
    code, default_detail = "deposit_mismatch", "The provider's payment does not match the deposit."


class PayoutAccountMissing(Conflict):
    code, default_detail = "payout_account_missing", "Connect a payout account first."


class IdempotencyKeyInFlight(Conflict):
    code, default_detail = "idempotency_key_in_flight", "A request with this Idempotency-Key is still in progress."
    response_headers = {"Retry-After": "Seconds until the running request's lease ends."}


class IdempotencyKeyMismatch(Unprocessable):
    code, default_detail = "idempotency_key_reused", "This Idempotency-Key was used with a different request body."


class PaymentProviderError(AppError):
    status_code, code, default_detail = 502, "payment_provider_error", "The payment provider refused the request."


class PayoutBelowMinimum(Unprocessable):
    code, default_detail = "payout_below_minimum", "The amount is below the minimum payout."


class PaymentMethodRejected(AppError):
    status_code, code, default_detail = 402, "payment_method_rejected", "The payment method was declined or is unknown."


class MembershipActive(Conflict):
    code, default_detail = "membership_active", "You already have an active membership."


class InvalidWebhookSignature(AppError):
    status_code, code, default_detail = 400, "invalid_signature", "The webhook signature is missing or invalid."
