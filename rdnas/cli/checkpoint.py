"""Loading a trained supernet from a checkpoint of rdnas train (shared by eval and search)."""


def load_supernet(checkpoint, device):
    """(supernet on ``device``, its TrainConfig, its data splits) from a checkpoint written by rdnas train."""
    from rdnas.train import TrainConfig, load_checkpoint, load_data

    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    config.device = device
    data = load_data(config)
    supernet = config.build_supernet(data)
    supernet.load_state_dict(state["model"])
    return supernet.to(device), config, data
