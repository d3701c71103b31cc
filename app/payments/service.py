"""Membership (Stripe subscriptions) and Connect onboarding. Filled in by the money-core work."""
