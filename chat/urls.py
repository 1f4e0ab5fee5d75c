from django.urls import path

from chat import views

app_name = "chat"
urlpatterns = [
    path("", views.chat_index, name="index"),
    path("new/", views.chat_new, name="new"),
    path("<int:pk>/", views.chat_detail, name="detail"),
    path("<int:pk>/ask/", views.chat_ask, name="ask"),
    path("<int:pk>/delete/", views.chat_delete, name="delete"),
    path("passages/<int:chunk_id>/", views.chat_passage, name="passage"),
]
