from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo-only pieces of example_project: the home page and the seed/demo commands."""

    name = "example_project.demo"
    label = "demo"
    verbose_name = "Offline access demo"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (connects the example signal receiver)
