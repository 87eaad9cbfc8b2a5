"""Names shared by registration, verification, promotion and serving: aliases, tags, file names."""

from __future__ import annotations

# Registry aliases. Promotion moves `champion` and keeps the one before it as `previous`.
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous"

# Files added to every logged model folder. The signature covers every file but itself.
SIGNATURE_FILE = "model.sig"
PROVENANCE_FILE = "provenance.json"
TRAINED_FILES_DIR = "trained"  # pyfunc artifact key and folder holding the trainer's own files

# Model version tags (and logged-model tags) written at registration.
TAG_TRAINING_RUN_ID = "tollgate.training_run_id"
TAG_SIGNATURE_SHA256 = "tollgate.signature_sha256"
TAG_SIGNER_KEY_ID = "tollgate.signer_key_id"
TAG_PROVENANCE_SHA256 = "tollgate.provenance_sha256"
TAG_DATASET_REV = "tollgate.dataset_rev"
TAG_DATASET_CONTENT_HASH = "tollgate.dataset_content_hash"
TAG_REGISTRATION = "tollgate.registration"  # "complete" once alias and tags are all set
TAG_SIGNED = "tollgate.signed"  # on the logged model: "true" once model.sig and provenance are uploaded
TAG_ABANDONED = "tollgate.abandoned"  # on a logged model left half-done by an interrupted attempt
REGISTRATION_COMPLETE = "complete"

# Tags that verification compares with the signed provenance statement.
SIGNED_TAGS = (
    TAG_TRAINING_RUN_ID,
    TAG_SIGNATURE_SHA256,
    TAG_SIGNER_KEY_ID,
    TAG_PROVENANCE_SHA256,
    TAG_DATASET_REV,
    TAG_DATASET_CONTENT_HASH,
)
