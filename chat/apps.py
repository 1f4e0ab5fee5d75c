from django.apps import AppConfig


def language_model_health() -> tuple[object, list[str]]:
    """The language model answers come from, for the health report (core.health)."""
    from chat.llm import active_llm_info

    try:
        return active_llm_info(), []
    except Exception as error:
        return f"error: {error}", ["the language model is misconfigured"]


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self):
        from core import health

        health.register("language_model", language_model_health)
