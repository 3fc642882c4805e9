"""What the running app needs below HTTP and the trainer both use: the model stores, the dialogue as the settings
describe it, merged serving of the promoted version, and the queue of retraining runs."""
