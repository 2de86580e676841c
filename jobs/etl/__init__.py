"""The Spark ETL and validation job: landing batch -> cleaned, validated features in the feature store."""
