"""High-precision intent rules for the most severe harmful-request categories.

Each rule is a *request* (how to / help me / steps to / I want to ...) plus a harmful verb and
object a few words apart, e.g. "how do I build + a pipe bomb". A mention without a request
("the history of the atomic bomb", "my kid asked what anthrax is") matches none of them; the
classifier in ``harmful.py`` handles the long tail. Protective framing (prevent, protect,
recognise the signs, report) switches the child-safety rule off.
"""

from __future__ import annotations

import re

from assistant.safety.verdict import Category

# A request for capability: the part that separates "how to make a bomb" from "bomb".
_REQUEST = (
    r"(?:how (?:do|can|could|would|should|might|to|does) (?:i |we |one |you |someone |u )?|"
    r"how to|how i can|ways? to|best way to|easiest way to|quickest way to|cheapest way to|"
    r"steps? (?:to|for)|instructions? (?:to|for|on)|guide (?:to|for|on)|tutorial (?:on|for)|"
    r"recipe for|procedure for|method (?:to|for)|teach me|show me|tell me how|explain how|"
    r"help me|i want to|i need to|i'?m going to|i plan to|i'?d like to|let'?s|can you|"
    r"could you|give me|write (?:me )?(?:a |an )?(?:guide|instructions|steps|tutorial)|"
    r"walk me through|detailed|step[- ]by[- ]step|where (?:can|do) i (?:buy|get|find|order))"
)
_W = r"(?:\s+[\w'-]+){0,5}?\s+"  # up to five words in between

_WEAPON_OBJECT = (
    r"(?:(?<!bath )(?<!photo )(?<!seed )(?<!glitter )(?<!yarn )(?<!fork )bombs?|"
    r"pipe ?bombs?|car bombs?|nail bombs?|dirty bombs?|explosives?|explosive devices?|ieds?|"
    r"detonators?|nerve (?:agent|gas)|sarin|tabun|soman|vx(?: gas| nerve agent)?|novichok|"
    r"ricin|abrin|anthrax|botulinum(?: toxin)?|botulism toxin|smallpox|plague bacteria|"
    r"bio ?weapons?|biological weapons?|chemical weapons?|nuclear (?:weapons?|bombs?|device)|"
    r"atomic bombs?|mustard gas|chlorine gas|phosgene|napalm|thermite (?:bomb|charge)|"
    r"weapons?[- ]grade (?:uranium|plutonium|anthrax)|radiological weapons?|"
    r"(?:molotov|molotov cocktails?)|tatp|petn|semtex|c-?4 explosive|ammonium nitrate bombs?|"
    r"pathogens? (?:more|as a weapon)|(?:virus|pathogen) (?:more )?(?:transmissible|"
    r"lethal|deadly))"
)
_PERSON = (
    r"(?:my |a |the |this |that |our |his |her |their )?(?:\w+ )?(?:someone|somebody|person|"
    r"people|him|her|them|man|woman|guy|girl|boy|kid|child|baby|wife|husband|girlfriend|"
    r"boyfriend|ex|partner|boss|coworker|colleague|neighbou?r|teacher|classmate|roommate|"
    r"father|mother|dad|mom|mum|brother|sister|uncle|aunt|friend|enemy|rival|president|"
    r"senator|mayor|politician|officer|cop|witness|landlord|family|crowd|students|"
    r"classmates|co-?workers)"
)

RULES: tuple[tuple[Category, str, re.Pattern[str]], ...] = tuple(
    (category, name, re.compile(pattern)) for category, name, pattern in (
        (Category.INDISCRIMINATE_WEAPONS, "weapon of mass harm",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:make|build|create|synthesi[sz]e|produce|"
         r"assemble|construct|manufacture|weaponi[sz]e|cook|brew|mix|culture|grow|enrich|"
         r"extract|purify|obtain|acquire|get|buy|order|detonate|set off|deploy|release|"
         r"spread|aerosoli[sz]e|disperse|rig|wire)" + _W + r"(?:\w+\s+){0,2}?"
         + _WEAPON_OBJECT + r"\b"),
        (Category.INDISCRIMINATE_WEAPONS, "weapon of mass harm",
         r"\b(?:recipe|formula|blueprints?|schematics?|synthesis route|synthesis steps|"
         r"ingredients) (?:for|of|to make) (?:a |an |the )?" + _WEAPON_OBJECT + r"\b"),
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\b(?:" + _REQUEST + r"|painless(?:ly)?|quick(?:ly)?|easiest|surest|fastest)"
         r"(?:\s+[\w'-]+){0,3}?\s*(?:kill myself|end my (?:own )?life|commit suicide|"
         r"take my (?:own )?life|hang myself|cut myself|slit my wrists?|overdose|od on|"
         r"starve myself|hurt myself|harm myself|poison myself|suicide method)"),
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\bhow (?:many|much)\b.{0,40}\b(?:to (?:die|kill myself|end (?:it|my life))|"
         r"(?:is|would be) (?:a )?(?:lethal|fatal|deadly)(?: dose)?|lethal dose)\b"),
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\b(?:which|what) (?:pills?|drugs?|medications?|method|way)\b.{0,40}\b(?:kill myself|"
         r"end my life|die (?:quickly|painlessly|in my sleep)|commit suicide)"),
        (Category.VIOLENT_CRIMES, "violence against a person",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:kill|murder|poison|strangle|stab|shoot|"
         r"assassinate|kidnap|abduct|torture|maim|dismember|beat up|hurt|attack|drown|"
         r"suffocate|run over|get rid of)\s+" + _PERSON
         + r"\b(?! (?:process|task|job|thread|character|npc|boss fight|mode|level|in (?:the|a) "
         r"(?:game|story|novel|book|scene)))"),
        (Category.VIOLENT_CRIMES, "violence against a person",
         r"\b(?:dispose of|hide|get rid of|dissolve) (?:a |the )?(?:dead )?(?:body|corpse)\b"
         r"(?!.{0,40}\b(?:in (?:my|the|a) (?:novel|story|book|game)|character))"),
        (Category.VIOLENT_CRIMES, "violence against a person",
         r"\b(?:untraceable|undetectable) (?:poison|way to kill|murder)"
         r"|\bmake (?:it|a (?:murder|death|killing)) look like (?:an accident|a suicide|"
         r"natural causes)"),
        (Category.CHILD_EXPLOITATION, "sexual content involving a minor",
         r"\b(?:sex(?:ual)?|erotic|nude|naked|explicit|porn\w*|lewd|intimate|aroused|nsfw)"
         r"\b(?:\s+[\w'-]+){0,6}?\s+(?:child(?:ren)?|kids?|minors?|underage|preteens?|"
         r"pre-teens?|toddlers?|little (?:girls?|boys?)|schoolgirls?|schoolboys?|"
         r"(?:[1-9]|1[0-7])[- ]?(?:yo|y/o|years?[- ]old))\b"),
        (Category.CHILD_EXPLOITATION, "sexual content involving a minor",
         r"\b(?:child(?:ren)?|kids?|minors?|underage|preteens?|toddlers?|little (?:girls?|"
         r"boys?)|(?:[1-9]|1[0-7])[- ]?(?:yo|y/o|years?[- ]old))\b(?:\s+[\w'-]+){0,6}?\s+"
         r"(?:sex(?:ual(?:ly)?)?|erotic|nude|naked|explicit|porn\w*|lewd|nsfw)\b"),
        (Category.CHILD_EXPLOITATION, "grooming a minor",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:groom|seduce|lure|get (?:alone )?with|meet up "
         r"with|sext|befriend)\s+(?:a |an |the |my |this )?(?:\w+ )?(?:child|kid|minor|"
         r"(?:young |little )?(?:girl|boy)|preteen|teen(?:ager)?|(?:[1-9]|1[0-7])[- ]?"
         r"(?:yo|years?[- ]old))\b"),
        (Category.SEX_CRIMES, "sexual assault",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:rape|sexually assault|molest|drug|roofie|"
         r"spike)\s+(?:a |an |the |my |her |his |someone'?s? |somebody'?s? |women'?s? |"
         r"girls?'? )?(?:\w+ )?(?:drinks?|someone|somebody|woman|women|girl|girls|her|him|"
         r"date|wife|girlfriend|coworker|person)\b"),
        (Category.SEX_CRIMES, "sexual assault",
         r"\b(?:date[- ]rape drugs?|roofies?|ghb)\b.{0,40}\b(?:buy|get|make|use|slip|put|"
         r"dose|where)\b|\b(?:spy on|secretly (?:film|record|photograph)|hidden camera (?:in|"
         r"for))\b.{0,40}\b(?:changing|undress\w*|shower\w*|naked|bathroom|toilet|locker)"),
        (Category.NON_VIOLENT_CRIMES, "drug synthesis",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:make|cook|synthesi[sz]e|produce|manufacture|"
         r"extract|brew|grow)" + _W + r"(?:\w+\s+){0,2}?(?:meth(?:amphetamine)?|crystal meth|"
         r"crack(?: cocaine)?|heroin|fentanyl|carfentanil|cocaine|lsd|mdma|ecstasy|dmt|"
         r"ghb|pcp|ketamine|opium|morphine from poppies)\b"),
    )
)


def match_rule(view: str) -> tuple[Category, str] | None:
    """The category and rule name of the first intent rule that matches a normalised view."""
    for category, name, pattern in RULES:
        if pattern.search(view):
            if category is Category.CHILD_EXPLOITATION and _PROTECTIVE.search(view):
                continue
            return category, name
    return None


# Keeping children safe, sex education, and reporting abuse are what parents and teachers ask.
_PROTECTIVE = re.compile(
    r"\b(?:protect|prevent|prevention|warning signs|signs of|spot|recogni[sz]e|report(?:ing)?|"
    r"keep (?:my |our )?(?:kids?|children|child) safe|talk to (?:my|our) (?:kids?|children|"
    r"child|son|daughter)|age[- ]appropriate|sex(?:ual)? education|puberty|consent|"
    r"survivors?|therap\w+|abused as a child|was abused|safeguard\w*|grooming signs|"
    r"online safety|parental controls?|pediatrician|doctor|normal (?:for|behaviou?r))\b"
)
