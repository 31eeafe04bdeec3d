"""Events encrypted to auditors (docs/FORMAT.md §9, docs/ENCRYPTION.md).

``scheme``: the one definition of the bytes (ratchet, record keys, AAD, payload objects);
``writer``: what the hot log keeps while it appends (one key epoch per segment);
``reader``: decryption, selective disclosure and its verification, for auditors.
"""
