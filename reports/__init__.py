"""Retail analytics on the warehouse: `report sales|products|countries|customers|returns|rfm|cohorts|dashboard`.

The choices the commands offer live here, so the command line can list them without importing
the query machinery.
"""

PERIODS = ("day", "week", "month", "quarter")
PRODUCT_RANKINGS = ("revenue", "units", "returns")
RETURN_VIEWS = ("product", "country")
FORMATS = ("table", "csv", "json")
