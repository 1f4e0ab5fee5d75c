from django.urls import path

from documents import collection_views as views

app_name = "collections"
urlpatterns = [
    path("", views.collection_list, name="list"),
    path("<int:pk>/", views.collection_detail, name="detail"),
    path("<int:pk>/members/", views.member_add, name="member_add"),
    path("<int:pk>/members/<int:user_id>/remove/", views.member_remove, name="member_remove"),
    path("<int:pk>/invitations/<int:invitation_id>/withdraw/", views.invitation_withdraw, name="invitation_withdraw"),
    path("invitations/<int:invitation_id>/accept/", views.invitation_accept, name="invitation_accept"),
    path("invitations/<int:invitation_id>/decline/", views.invitation_decline, name="invitation_decline"),
]
