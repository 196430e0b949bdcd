"""The class board: everyone's shared results side by side (see ARCHITECTURE.md).

    board = Board(class_code=configured_code())      # SQLite in lab.paths.cache_dir()
    board.share(share_record(result), "ana")         # checked, stored, acknowledged
    for g in groups(board.rows()): agreement(g).sentence()

No Streamlit here: views/board.py draws it, ui/share.py is the result pages' button.
"""
from lab.board.record import share_record
from lab.board.stats import (Group, agreement, changed_settings, group_key, groups, headline,
                             sae_agreement)
from lab.board.store import (NICK_MAX, SCHEMA_VERSION, Board, NeedsCode, clean_nickname,
                             configured_code, default_path)
from lab.board.validate import BOARD_EXPERIMENTS, Refused, check_record

__all__ = ["BOARD_EXPERIMENTS", "Board", "Group", "NICK_MAX", "NeedsCode", "Refused",
           "SCHEMA_VERSION", "agreement", "changed_settings", "check_record", "clean_nickname",
           "configured_code", "default_path", "group_key", "groups", "headline", "sae_agreement",
           "share_record"]
