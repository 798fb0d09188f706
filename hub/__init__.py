"""Publishing to the Hugging Face Hub.

    python hub/push.py CHECKPOINT --repo-id USER/NAME [--dry-run DIR]   # a checkpoint, as a model repo
    python hub/space.py --repo-id USER/NAME [--dry-run DIR]             # the demo app, as a Gradio Space
    python hub/card.py RESULTS_JSON                                     # preview a card's results section

push.py and space.py assemble one folder, then upload it in one commit; `--dry-run DIR` writes the folder and uploads nothing.
See docs/hub.md.
"""
