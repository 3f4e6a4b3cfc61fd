"""HTTP: the admin API, the SDK API and operations endpoints. No business rules here."""
