"""The peer's two endpoints: DOT's own token view at /oauth/token, and
GET /api/me, a ProtectedResourceView answering with the calling client's
id, name and the token's scope, as the project's /api/me does."""
from django.http import JsonResponse
from django.urls import path
from oauth2_provider.views import ProtectedResourceView, TokenView


class Me(ProtectedResourceView):
    def verify_request(self, request):
        # Keep the token DOT found (with its application, in one query) for get().
        valid, oauth_request = super().verify_request(request)
        request.access_token = oauth_request.access_token if valid else None
        return valid, oauth_request

    def get(self, request):
        application = request.access_token.application
        return JsonResponse({'client_id': application.client_id, 'name': application.name,
                             'scope': request.access_token.scope})


urlpatterns = [path('oauth/token', TokenView.as_view()), path('api/me', Me.as_view())]
