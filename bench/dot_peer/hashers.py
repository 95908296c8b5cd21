from django.contrib.auth.hashers import PBKDF2PasswordHasher


class OneRoundPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """PBKDF2-SHA256 with one round, as the project hashes client secrets
    (models.SECRET_HASH_METHOD): enough for random 256-bit secrets. A hasher
    of one's own, as Django's password documentation shows."""

    algorithm = 'pbkdf2_sha256_one_round'
    iterations = 1
