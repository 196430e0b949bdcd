"""Feature evidence for one SAE latent: what it fires on, what it writes, what removing it does.

    examples   its top contexts over a corpus it was not trained on (the bundled texts, the
               articles fetched on the laminar page, extra text), its histogram and density,
               and how many top examples are target words
    output     its decoder direction read through the final norm and the unembedding
    causal     the SAE spliced into the forward (reconstruction + error term: unedited, the
               output is the model's own), the latent ablated or steered, the change in the
               next-token distribution over a text, against control latents of similar density

Any SAE the lab can load (lab.sae.load.load_sae): one trained on the SAE page, a folder in
SAELens's format, a hub id, or by default the original notes' Palinka SAE for the model.

    config.py    FeatureConfig
    store.py     the default SAE and the SAE page's saved ones (under the cache folder)
    splice.py    the SAE spliced in at its hook, with an edit (thread-aware hooks)
    causal.py    KL, moved tokens, control latents
    output.py    the output effect
    examples.py  the corpus scan (lab.scan) and the top examples
    run.py       run, partial_result
    result.py    FeatureResult: to_record(), frames(), brief()
"""
from lab.feature.config import PLACES, FeatureConfig
from lab.feature.result import FeatureResult
from lab.feature.run import State, partial_result, run
from lab.feature.splice import Edit, edited_logits, logits, patch_for, splice
from lab.feature.store import default_sae, keep_sae

__all__ = ["PLACES", "Edit", "FeatureConfig", "FeatureResult", "State", "default_sae",
           "edited_logits", "keep_sae", "logits", "partial_result", "patch_for", "run", "splice"]
