from django.urls import path

from chat import views

app_name = "chat"
urlpatterns = [
    path("", views.chat_index, name="index"),
    path("new/", views.chat_new, name="new"),
    path("<int:pk>/", views.chat_detail, name="detail"),
    path("<int:pk>/ask/", views.chat_ask, name="ask"),
    # Managing conversations
    path("<int:pk>/rename/", views.chat_rename, name="rename"),
    path("<int:pk>/export.md", views.chat_export, name="export"),
    path("<int:pk>/delete/", views.chat_delete, name="delete"),
    path("delete/", views.chat_delete_many, name="delete_many"),
    path("passages/<int:chunk_id>/", views.chat_passage, name="passage"),
]
