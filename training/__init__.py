"""Training, by job. Import the submodules you need.

    data/        the data sets behind one `open_data(name)`: faces, digits, stacked-digits, 2-D points, folders
    recipes/     what differs per model kind (build, optimizers, one step); RECIPES names them
    evaluate/    `evaluate(checkpoint)` per kind, and the metrics it uses (bounds, MIG, modes, FD, readouts)
    train.py     the loop shared by every kind: TrainConfig, train(); state.py its resume state
    losses.py    loss pieces; samples.py draws and sample grids; plots.py curves and the 2-D samples picture
    attributes.py  named latent directions of a VAE from labelled data
"""
