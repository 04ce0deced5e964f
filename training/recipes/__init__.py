"""One module per family of zoo models; each exposes train_* functions returning a recipe.Trained."""
