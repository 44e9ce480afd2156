-- A model version may declare the feature service it reads its inputs from.

ALTER TABLE model_versions ADD COLUMN feature_service TEXT;
