"""train/shape_oracle.py: the classifier that sees the face model's correspondence reads what it is given."""

import numpy as np
import pytest

from train.shape_oracle import LABELS, ShapeOracle, shapes


@pytest.fixture(scope="module")
def face_models(sfm_dir):
    from test_data_ict import ICT_HOW_TO, ict_folder

    from affectvlm.data.ict import ICT_NPZ, load_ict
    from affectvlm.data.sfm import load_sfm

    if not (ict_folder() / ICT_NPZ).is_file():
        pytest.skip(f"no {ICT_NPZ} in {ict_folder()}: {ICT_HOW_TO}")
    return {"sfm": load_sfm(sfm_dir), "ict": load_ict(ict_folder())}


def test_the_oracle_reads_strong_expressions_of_new_identities_and_learns_nothing_from_shuffled_labels(face_models):
    train = shapes(5, 60, progress=False, **face_models)
    test = shapes(6, 6, progress=False, **face_models)
    assert set(train) == set(test) == {"sfm", "ict"}
    for model, d in train.items():
        assert len(d["x"]) == 25 * len(np.unique(d["subject"]))  # neutral + 6 emotions x 4 levels a subject
        strong = test[model]["level"] >= 3
        read = ShapeOracle(components=60).fit(d["x"], d["label"], d["subject"]).predict(test[model]["x"])
        right = read[strong] == test[model]["label"][strong]
        assert right.mean() >= 0.9, (model, right.mean())
        shuffled = np.random.default_rng(0).permutation(d["label"])
        guess = ShapeOracle(components=60).fit(d["x"], shuffled, d["subject"]).predict(test[model]["x"])
        assert (guess[strong] == test[model]["label"][strong]).mean() < 0.5, model
    assert len(LABELS) == 7


def test_faces_carried_across_face_models_keep_their_expressions(face_models):
    """`--cross --relative`: an ICT face carried onto the SFM's vertices keeps what its expression does; an oracle
    trained on one face model's displacements reads the other's strong smiles and surprise (which both face
    models' recipes build alike) far above chance (1/7)."""
    train = shapes(5, 60, progress=False, onto_sfm=True, relative=True, **face_models)
    test = shapes(6, 8, progress=False, onto_sfm=True, relative=True, **face_models)
    assert train["ict"]["x"].shape[1] == train["sfm"]["x"].shape[1]  # the same vertices
    oracles = {m: ShapeOracle(components=60).fit(d["x"], d["label"], d["subject"]) for m, d in train.items()}
    for trained, read in [("sfm", "ict"), ("ict", "sfm")]:
        d = test[read]
        alike = (d["level"] >= 3) & np.isin(d["label"], [LABELS.index("happiness"), LABELS.index("surprise")])
        right = oracles[trained].predict(d["x"][alike]) == d["label"][alike]
        assert right.mean() >= 0.6, (trained, read, right.mean())
