import uuid

from django import forms
from django.conf import settings

from apps.core.permissions import ROLE_CHOICES


class ApiTokenForm(forms.Form):
    nonce = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4, required=False,
                            help_text="One per rendered form, so that a reload cannot create a second token.")
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'CI pipeline'.")
    scopes = forms.MultipleChoiceField(choices=[("read", "read"), ("write", "write")], initial=["read"],
                                       widget=forms.CheckboxSelectMultiple,
                                       help_text="read: GET only. write: also create and change things.")
    expires_in_days = forms.IntegerField(min_value=1, max_value=settings.API_TOKEN_MAX_DAYS, initial=90,
                                         label="Expires in (days)")


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.SlugField(max_length=50, help_text="Lower-case letters, digits and hyphens.")
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))


class MembershipForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="The user's username.")
    role = forms.ChoiceField(choices=ROLE_CHOICES)
