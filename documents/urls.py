from django.urls import path

from documents import views

app_name = "documents"
urlpatterns = [
    path("", views.document_list, name="list"),
    path("status.json", views.document_status, name="status"),
    path("bulk/", views.document_bulk, name="bulk"),
    path("history/forget/", views.forget_history, name="forget_history"),
    path("<int:pk>/", views.document_detail, name="detail"),
    path("passages/<int:pk>/similar/", views.chunk_similar, name="chunk_similar"),
    path("<int:pk>/download/", views.document_download, name="download"),
    path("<int:pk>/delete/", views.document_delete, name="delete"),
    path("<int:pk>/reingest/", views.document_reingest, name="reingest"),
    path("<int:pk>/cancel/", views.document_cancel, name="cancel"),
]
