from django.urls import path

from documents import collection_views as views

app_name = "collections"
urlpatterns = [
    path("", views.collection_list, name="list"),
    path("<int:pk>/", views.collection_detail, name="detail"),
    path("<int:pk>/members/", views.member_add, name="member_add"),
    path("<int:pk>/members/<int:user_id>/remove/", views.member_remove, name="member_remove"),
]
