"""Model architectures of the study, by name."""

from . import transunet, unet  # noqa: F401  (importing registers the models)
from ._registry import (
                        UnknownModelError,
                        check_model_name,
                        count_parameters,
                        create_model,
                        list_models,
                        model_description,
                        register_model,
                        uses_group_norm,
)

__all__ = ["UnknownModelError", "check_model_name", "count_parameters", "create_model", "list_models",
           "model_description", "register_model", "uses_group_norm"]
